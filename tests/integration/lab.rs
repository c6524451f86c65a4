use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Event, Events, Recorder};
use castle_tests::{created, lab_copy, paused};
use std::sync::Arc;

fn recorder() -> (Recorder, RunOptions) {
    let r = Recorder::new();
    let options = RunOptions {
        events: Events::new().with(Arc::new(r.clone())),
        ..RunOptions::default()
    };
    (r, options)
}

#[tokio::test(start_paused = true)]
async fn a_full_lab_rebirth_runs_every_step_and_a_resume_has_nothing_to_do() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let (rec, options) = recorder();
    let summary = castle.create(options).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    let ids = castle.step_ids().unwrap();
    // Fifteen steps, and three units for each of the three nodes.
    assert_eq!(ids.len(), 15 + 3 * 3, "{ids:?}");
    for node in ["cp-1", "worker-1", "worker-2"] {
        for unit in ["platform", "talos", "join"] {
            let id = format!("{unit}/{node}");
            let timing = summary.report.steps.iter().find(|s| s.id == id).unwrap();
            assert_eq!(timing.node.as_deref(), Some(node), "{id}");
        }
    }
    assert!(
        summary.report.steps.iter().all(|s| s.status == "done"),
        "{:#?}",
        summary.report.steps
    );
    assert_eq!(
        summary.report.critical_path.first().map(String::as_str),
        Some("secrets")
    );
    assert_eq!(
        summary.report.critical_path.last().map(String::as_str),
        Some("verify")
    );
    assert!(
        summary.report.makespan_ms > 60_000,
        "modelled minutes, not zero: {}",
        summary.report.makespan_ms
    );
    assert!(rec.events().iter().any(|e| matches!(e, Event::StepProgress { message, .. } if message.contains("MetalLB webhook serving"))));
    // Issue 17: the report names each HelmRelease with its chart and version.
    let notes: Vec<&String> = summary.report.steps.iter().flat_map(|s| &s.notes).collect();
    for want in [
        "HelmRelease external-secrets/external-secrets Ready: external-secrets 0.19.2 from https://charts.external-secrets.io",
        "HelmRelease metallb-system/metallb Ready: metallb 0.15.2 from https://metallb.github.io/metallb",
        "HelmRelease longhorn-system/longhorn Ready: longhorn 1.9.1 from https://charts.longhorn.io",
    ] {
        assert!(
            notes.iter().any(|n| n.as_str() == want),
            "{want}: {notes:?}"
        );
        assert!(summary.report.table().contains(want));
    }
    // Issue 14, defect 5: the ESO and Flux bundles apply their Namespaces as their own
    // field managers, so the label Castle's engine step applied stays.
    for ns in ["flux-system", "external-secrets"] {
        let got = castle_kube::ClusterApi::get(
            &castle.lab().unwrap().cluster,
            &castle_kube::ObjectRef::new("v1", "Namespace", None, ns),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            got.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
            Some(&serde_json::json!("castle")),
            "{ns}: {got}"
        );
    }
    for f in [
        "report.json",
        "events.jsonl",
        "timeline.svg",
        "timeline.txt",
    ] {
        assert!(summary.run_dir.join(f).exists(), "{f}");
    }

    let (rec, options) = recorder();
    let again = Castle::open(&config)
        .unwrap()
        .create(RunOptions {
            resume: true,
            ..options
        })
        .await
        .unwrap();
    assert!(again.error.is_none());
    let skipped = rec
        .events()
        .iter()
        .filter(|e| matches!(e, Event::StepSkipped { .. }))
        .count();
    assert_eq!(skipped, ids.len(), "nothing to do");
}

#[tokio::test(start_paused = true)]
async fn two_rebirths_leave_one_device_per_node_with_the_exact_names_and_destroy_leaves_nothing() {
    let (_dir, config) = lab_copy(paused);
    for round in 0..2 {
        let castle = Castle::open(&config).unwrap();
        let summary = castle.create(RunOptions::default()).await.unwrap();
        assert!(
            summary.error.is_none(),
            "round {round}: {:?}",
            summary.error.map(|e| e.to_string())
        );
        let lab = castle.lab().unwrap();
        let mut names: Vec<String> = lab
            .tailscale
            .devices()
            .into_iter()
            .map(|d| d.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "lab-cp-1.tail0000.ts.net",
                "lab-worker-1.tail0000.ts.net",
                "lab-worker-2.tail0000.ts.net"
            ],
            "round {round}"
        );
        assert_eq!(lab.tailscale.live_keys(), 1, "round {round}: one live key");
        let d = castle.destroy(RunOptions::default(), false).await.unwrap();
        assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
        let status = castle.status().await.unwrap();
        assert!(status.nothing_left(), "{}", status.render());
    }
}

#[tokio::test(start_paused = true)]
async fn destroy_touches_nothing_castle_does_not_own() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let lab = castle.lab().unwrap();
    lab.proxmox
        .add_vm(425, "someone-elses", &["prod"], true)
        .unwrap();
    lab.proxmox
        .add_vm(430, "outside-range", &["castle"], false)
        .unwrap();
    castle.create(RunOptions::default()).await.unwrap();
    let d = castle.destroy(RunOptions::default(), true).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    let vms: Vec<u32> = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.vmid)
        .collect();
    assert!(
        vms.contains(&425) && vms.contains(&430),
        "decoys stay: {vms:?}"
    );
    assert!(castle.status().await.unwrap().nothing_left());
}

/// One ownership rule for create, destroy and `--wipe`: the VMID range, Castle's tag
/// and this cluster's own tag (`castle-lab`). Another cluster's Castle VMs in the
/// range, untagged VMs and VMs with other tags are reported and never touched.
#[tokio::test(start_paused = true)]
async fn another_clusters_castle_vms_in_the_range_are_never_touched() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let lab = castle.lab().unwrap();
    let decoys: [(u32, &str, &[&str]); 5] = [
        (424, "other-cp-1", &["castle", "castle-other"]),
        (425, "other-worker-1", &["castle", "other"]),
        (426, "untagged", &[]),
        (427, "prod-db", &["prod"]),
        (431, "castle-out-of-range", &["castle", "castle-lab"]),
    ];
    for (vmid, name, tags) in decoys {
        lab.proxmox.add_vm(vmid, name, tags, true).unwrap();
    }
    created(&castle).await;
    for round in [false, true] {
        let d = castle.destroy(RunOptions::default(), round).await.unwrap();
        assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
        let vms: Vec<u32> = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap()
            .into_iter()
            .filter(|v| !v.template)
            .map(|v| v.vmid)
            .collect();
        assert_eq!(
            vms,
            [424, 425, 426, 427, 431],
            "wipe={round}: only decoys are left"
        );
        assert!(castle.status().await.unwrap().nothing_left());
    }
    // A decoy at a VMID the config wants stops create, named, and is left alone.
    lab.proxmox
        .add_vm(422, "other-worker-2", &["castle", "castle-other"], true)
        .unwrap();
    let refused = castle.create(RunOptions::default()).await.unwrap();
    let err = refused.error.expect("VMID 422 is taken").to_string();
    assert!(
        err.contains("422") && err.contains("another cluster"),
        "{err}"
    );
    let d = castle.destroy(RunOptions::default(), true).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    let still = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
        .await
        .unwrap();
    assert!(
        still
            .iter()
            .any(|v| v.vmid == 422 && v.name == "other-worker-2")
    );
}

#[tokio::test(start_paused = true)]
async fn destroy_does_not_hang_on_an_api_server_that_is_already_gone() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    castle.lab().unwrap().cluster.set_reachable(false);
    let started = tokio::time::Instant::now();
    let (rec, options) = recorder();
    let d = castle.destroy(options, false).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    // The gitops step's destroy did call the API server (to suspend Flux), was
    // refused, said so, and the destroy went on.
    assert_eq!(
        gitops_destroy_messages(&rec),
        [
            "Flux not suspended: kubernetes API unreachable: dial tcp 192.168.1.210:6443: connect: connection refused; removed with the cluster's VMs"
        ],
    );
    assert!(castle.status().await.unwrap().nothing_left());
}

/// What the gitops step said while being destroyed.
fn gitops_destroy_messages(rec: &Recorder) -> Vec<String> {
    rec.events()
        .iter()
        .filter_map(|e| match e {
            Event::StepProgress { step, message, .. } if step == "gitops" => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// With a live API server, destroy suspends Flux's root Kustomization before the
/// VMs go (as `flux suspend kustomization flux-system` would), keeping every other
/// field of the object the gitops step applied.
#[tokio::test(start_paused = true)]
async fn destroy_suspends_flux_on_a_live_cluster_before_the_vms_go() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    let cluster = castle.lab().unwrap().cluster.clone();
    let target = castle_kube::ObjectRef::new(
        "kustomize.toolkit.fluxcd.io/v1",
        "Kustomization",
        Some("flux-system"),
        "flux-system",
    );
    let before = castle_kube::ClusterApi::get(&cluster, &target)
        .await
        .unwrap()
        .unwrap();
    assert!(before["spec"].get("suspend").is_none());
    // Only the gitops step's destroy, so the cluster outlives it and can be read.
    let (rec, mut options) = recorder();
    options.only = Some(["gitops".to_string()].into());
    let d = castle.destroy(options, false).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    assert_eq!(
        gitops_destroy_messages(&rec),
        ["Flux suspended (Kustomization flux-system/flux-system)"]
    );
    let after = castle_kube::ClusterApi::get(&cluster, &target)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["spec"]["suspend"], true);
    assert_eq!(after["spec"]["path"], before["spec"]["path"]);
    assert_eq!(after["spec"]["sourceRef"], before["spec"]["sourceRef"]);
}

/// "Nothing left" comes from the systems: a lease or a device that outlived the
/// destroy shows in `status`, and a system that cannot be asked is never counted as
/// empty.
#[tokio::test(start_paused = true)]
async fn status_after_destroy_asks_the_systems_themselves() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    assert!(
        castle
            .destroy(RunOptions::default(), false)
            .await
            .unwrap()
            .error
            .is_none()
    );
    assert!(castle.status().await.unwrap().nothing_left());
    let lab = castle.lab().unwrap();
    // Someone reads database creds after the destroy: a live lease.
    castle_vault::VaultApi::read(&lab.vault, "database/creds/grafana")
        .await
        .unwrap();
    let status = castle.status().await.unwrap();
    assert!(!status.nothing_left());
    assert!(
        status
            .leftovers
            .iter()
            .any(|l| l.starts_with("vault lease database/creds/grafana/")),
        "{:?}",
        status.leftovers
    );
    castle_vault::revoke_leases(&lab.vault, &castle.config().vault.as_ref().unwrap().spec)
        .await
        .unwrap();
    assert!(castle.status().await.unwrap().nothing_left());
    lab.vault.set_sealed(true);
    let status = castle.status().await.unwrap();
    assert!(
        status
            .leftovers
            .iter()
            .any(|l| l.starts_with("vault: could not check")),
        "{:?}",
        status.leftovers
    );
    assert!(
        !status.nothing_left(),
        "an unanswered system is not an empty one"
    );
}

/// Issue 14, defect 6: a Kustomization that the API server refuses (a 422 on a
/// Deployment without containers) is Ready=False, ReconciliationFailed, never Stalled.
/// The gitops step shows the message as a progress event and ends within 30 s
/// (modelled) of Flux's bootstrap, naming the object, instead of waiting 25 minutes.
/// Sources: kustomize-controller `internal/controller/kustomization_controller.go`
/// (ReconciliationFailed on an apply error), fluxcd/pkg `ssa/errors/errors.go`
/// (`Kind/ns/name dry-run failed (Invalid): ...`).
#[tokio::test(start_paused = true)]
async fn a_flux_object_refused_by_the_api_server_ends_gitops_within_thirty_seconds() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let bad = vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traefik"}}),
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "traefik", "namespace": "traefik"},
            "spec": {"selector": {"matchLabels": {"app": "traefik"}}, "template": {"metadata": {"labels": {"app": "traefik"}}}}}),
    ];
    castle
        .lab()
        .unwrap()
        .cluster
        .set_git_tree("https://github.com/lab/ephemeral-castle.git", bad);
    let (rec, options) = recorder();
    let summary = castle.create(options).await.unwrap();
    let err = summary.error.expect("gitops fails").to_string();
    assert!(
        err.contains("gitops")
            && err.contains("Kustomization flux-system/flux-system")
            && err.contains("Deployment/traefik/traefik dry-run failed (Invalid)")
            && err.contains("spec.template.spec.containers: Required value"),
        "{err}"
    );
    let events = rec.events();
    let at = |want: &dyn Fn(&Event) -> bool| {
        events.iter().find(|e| want(e)).and_then(|e| match e {
            Event::StepProgress { at_ms, .. } | Event::StepFailed { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
    };
    let bootstrapped = at(&|e| matches!(e, Event::StepProgress { step, message, .. } if step == "gitops" && message.starts_with("Flux bootstrapped"))).expect("bootstrap");
    let shown = at(
        &|e| matches!(e, Event::StepProgress { step, message, .. } if step == "gitops" && message.contains("spec.template.spec.containers: Required value")),
    );
    let failed =
        at(&|e| matches!(e, Event::StepFailed { step, .. } if step == "gitops")).expect("failed");
    assert!(
        failed - bootstrapped < 30_000,
        "gitops failed {} ms after Flux's bootstrap",
        failed - bootstrapped
    );
    if let Some(shown) = shown {
        assert!(shown <= failed);
    }
    println!(
        "gitops failed {} ms (modelled) after Flux's bootstrap",
        failed - bootstrapped
    );
    let attempts = events.iter().find_map(|e| match e {
        Event::StepFailed { step, attempts, .. } if step == "gitops" => Some(*attempts),
        _ => None,
    });
    assert_eq!(attempts, Some(1), "a refusal is not retried");
}

/// Issue 14, defect 1: a field of the wrong type (`replicas: "two"`) is a 500 with an
/// empty reason from server-side apply's typed patch (kubernetes
/// `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`); it is permanent:
/// one attempt, and the error names the object and the field.
#[tokio::test(start_paused = true)]
async fn a_manifest_field_of_the_wrong_type_fails_its_step_once_naming_object_and_field() {
    let (dir, config) = lab_copy(paused);
    let manifest = dir.path().join("manifests/metallb.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("replicas: 1", "replicas: \"two\"", 1),
    )
    .unwrap();
    let castle = Castle::open(&config).unwrap();
    let (rec, options) = recorder();
    let summary = castle.create(options).await.unwrap();
    let err = summary.error.expect("networking fails").to_string();
    // The chart renders the bad Deployment: Helm's install fails, and the step shows
    // the HelmRelease's own message (helm-controller `internal/reconcile/install.go`).
    assert!(
        err.contains("networking")
            && err.contains("HelmRelease metallb-system/metallb")
            && err.contains(
                "InstallFailed: Helm install failed for release metallb-system/metallb with chart metallb@0.15.2"
            )
            && err.contains(".spec.replicas: expected numeric (int or float), got string"),
        "{err}"
    );
    let attempts = rec.events().iter().find_map(|e| match e {
        Event::StepFailed { step, attempts, .. } if step == "networking" => Some(*attempts),
        _ => None,
    });
    assert_eq!(attempts, Some(1), "a typo is not retried");
}

/// The lab's Vault knows the token its secrets held when the world was made: a run
/// presenting another is refused with OpenBao's 403 "permission denied", once, not
/// retried.
#[tokio::test(start_paused = true)]
async fn a_wrong_vault_token_fails_as_a_real_server_refuses_it() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    std::fs::write(
        dir.path().join("secrets/vault-token"),
        "not-the-lab-token\n",
    )
    .unwrap();
    let castle = Castle::open(&config).unwrap();
    let plan = castle.vault_plan().await.unwrap_err().to_string();
    assert!(
        plan.contains("403") && plan.contains("permission denied"),
        "{plan}"
    );
}

/// The lab's Proxmox knows the API token its secrets held when the world was made:
/// another gets pve-http-server's 401 "authentication failure", and the platform
/// step fails at once instead of retrying a credential that cannot work.
#[tokio::test(start_paused = true)]
async fn a_wrong_proxmox_token_fails_as_a_real_server_refuses_it() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    // Make the world (and the token it knows), then change the secret.
    assert!(castle.plan().await.is_ok());
    castle.lab().unwrap().save().unwrap();
    std::fs::write(dir.path().join("secrets/proxmox-token"), "00000000-wrong\n").unwrap();
    let castle = Castle::open(&config).unwrap();
    let run = castle.create(RunOptions::default()).await.unwrap();
    let err = run.error.expect("a wrong token stops the run").to_string();
    assert!(
        err.contains("401") && err.contains("authentication failure"),
        "{err}"
    );
    let platform = run
        .report
        .steps
        .iter()
        .find(|s| s.id == "platform")
        .unwrap();
    assert_eq!(platform.attempts, 1, "a refused credential is not retried");
}

/// A ClusterSecretStore Vault refuses never becomes Ready, and `verify` says which
/// store and what it waited for, instead of Castle reporting a working cluster.
#[tokio::test(start_paused = true)]
async fn a_store_whose_login_vault_refuses_fails_verify_and_names_the_store() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    castle
        .lab()
        .unwrap()
        .vault
        .fail_permanently("auth/jwt/login", "permission denied");
    let summary = castle.create(RunOptions::default()).await.unwrap();
    let err = summary.error.expect("verify fails").to_string();
    assert!(
        err.contains("verify") && err.contains("ClusterSecretStore lab-vault"),
        "{err}"
    );
    let store = castle_kube::ClusterApi::get(
        &castle.lab().unwrap().cluster,
        &castle_kube::ObjectRef::new(
            "external-secrets.io/v1",
            "ClusterSecretStore",
            None,
            "lab-vault",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        store["status"]["conditions"][0]["reason"], "InvalidProviderConfig",
        "{store}"
    );
}

/// Issue 17, item 8: the CoreDNS Castle ships takes the node's resolver, so the
/// lab's API server (which crash-loops CoreDNS forwarding to itself) rolls it out,
/// with the image the config names.
#[tokio::test(start_paused = true)]
async fn coredns_runs_on_the_nodes_resolver_with_the_configured_image() {
    let (_dir, config) = lab_copy(|t| {
        paused(t).replace(
            "image = \"registry.k8s.io/coredns/coredns:v1.14.2\"",
            "image = \"mirror.lab.invalid/coredns/coredns:v1.14.2\"",
        )
    });
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    let cluster = &castle.lab().unwrap().cluster;
    let get = |kind: &str, name: &str| {
        let r = castle_kube::ObjectRef::new(
            if kind == "Deployment" {
                "apps/v1"
            } else {
                "v1"
            },
            kind,
            Some("kube-system"),
            name,
        );
        async move {
            castle_kube::ClusterApi::get(cluster, &r)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let deployment = get("Deployment", "coredns").await;
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["dnsPolicy"], "Default", "{deployment}");
    assert_eq!(
        pod["containers"][0]["image"],
        "mirror.lab.invalid/coredns/coredns:v1.14.2"
    );
    assert_eq!(deployment["status"]["availableReplicas"], 2, "{deployment}");
    let corefile = get("ConfigMap", "coredns").await["data"]["Corefile"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        corefile.contains("forward . /etc/resolv.conf") && corefile.contains("    loop\n"),
        "{corefile}"
    );
    assert!(corefile.contains("ts.net:53 {"), "{corefile}");
}

/// `[[sync]]`: the password PGO's stand-in generates inside the cluster lands in
/// Vault KV under the configured field; a second `create` leaves Vault's version
/// alone; no event, journal or report holds the value; `destroy --wipe` removes it.
#[tokio::test(start_paused = true)]
async fn a_secret_made_in_the_cluster_is_synced_into_vault_once() {
    use base64::Engine as _;
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let first = created(&castle).await;
    let lab = castle.lab().unwrap();
    let secret = castle_kube::ClusterApi::get(
        &lab.cluster,
        &castle_kube::ObjectRef::new(
            "v1",
            "Secret",
            Some("tazlab-db"),
            "tazlab-db-pguser-grafana",
        ),
    )
    .await
    .unwrap()
    .expect("PGO's stand-in made the user Secret");
    let password = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["password"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let path = "secret/data/tazlab-k8s/static/monitoring/grafana";
    let kv = castle_vault::VaultApi::read(&lab.vault, path)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv["data"]["GRAFANA_DB_PASSWORD"], password.as_str());
    assert_eq!(kv["metadata"]["version"], 1);

    let second = castle.create(RunOptions::default()).await.unwrap();
    assert!(second.error.is_none());
    let kv = castle_vault::VaultApi::read(&lab.vault, path)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kv["metadata"]["version"], 1,
        "an unchanged value is not written again"
    );

    for run in [&first.run_dir, &second.run_dir] {
        for f in ["events.jsonl", "report.json"] {
            let text = std::fs::read_to_string(run.join(f)).unwrap();
            assert!(!text.contains(&password), "{f} holds the synced password");
        }
    }
    let journal = std::fs::read_to_string(dir.path().join(".castle/state.json")).unwrap();
    assert!(!journal.contains(&password));

    let wiped = castle.destroy(RunOptions::default(), true).await.unwrap();
    assert!(
        wiped.error.is_none(),
        "{:?}",
        wiped.error.map(|e| e.to_string())
    );
    assert!(
        castle_vault::VaultApi::read(&lab.vault, path)
            .await
            .unwrap()
            .is_none()
    );
}
