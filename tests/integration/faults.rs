use castle_core::castle::{Castle, RunOptions};
use castle_core::journal::Journal;
use castle_tests::{lab_copy, paused};

#[tokio::test(start_paused = true)]
async fn ten_percent_transient_faults_on_every_simulator_still_converge() {
    for seed in [1, 2, 3] {
        let (_dir, config) = lab_copy(|t| {
            paused(t)
                .replace("seed = 7", &format!("seed = {seed}"))
                .replace("transient_fault_rate = 0.0", "transient_fault_rate = 0.1")
        });
        let castle = Castle::open(&config).unwrap();
        // The shipped defaults: calls retry themselves, steps keep their five tries.
        let summary = castle.create(RunOptions::default()).await.unwrap();
        assert!(
            summary.error.is_none(),
            "seed {seed}: {:?}",
            summary.error.map(|e| e.to_string())
        );
        let lab = castle.lab().unwrap();
        assert!(
            lab.vault.calls() > 0 && summary.report.steps.iter().all(|s| s.status == "done"),
            "seed {seed}"
        );
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(config.parent().unwrap().join(".castle/lab/state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state["runs"], 1,
            "seed {seed}: the first opening of this world"
        );
        let lab = castle.lab().unwrap();
        // Inspecting the world is not part of the run: no faults for the test's own calls.
        lab.proxmox.clear_faults();
        let vms = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap();
        assert_eq!(
            vms.iter().filter(|v| !v.template).count(),
            3,
            "seed {seed}: no duplicate VMs"
        );
        assert_eq!(
            lab.tailscale.devices().len(),
            3,
            "seed {seed}: no duplicate devices"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_fault_stops_the_run_naming_the_step_and_resume_finishes_without_redoing_work()
{
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    castle.lab().unwrap().cluster.fail_permanently(
        "apply:IPAddressPool",
        "admission webhook denied the request: invalid CIDR",
    );
    let first = castle.create(RunOptions::default()).await.unwrap();
    let err = first.error.expect("fails").to_string();
    assert!(
        err.contains("networking") && err.contains("IPAddressPool"),
        "{err}"
    );
    let journal = Journal::peek(dir.path()).unwrap();
    assert_eq!(
        format!("{:?}", journal.steps["networking"].status),
        "Failed"
    );
    assert_eq!(format!("{:?}", journal.steps["platform"].status), "Done");

    castle.lab().unwrap().cluster.clear_faults();
    let second = castle
        .create(RunOptions {
            resume: true,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(
        second.error.is_none(),
        "{:?}",
        second.error.map(|e| e.to_string())
    );
    let rerun: Vec<&str> = second
        .report
        .steps
        .iter()
        .filter(|s| s.status == "done")
        .map(|s| s.id.as_str())
        .collect();
    assert!(
        !rerun.contains(&"platform") && !rerun.contains(&"vault-db"),
        "finished steps are not redone: {rerun:?}"
    );
    assert!(
        rerun.contains(&"networking") && rerun.contains(&"verify"),
        "{rerun:?}"
    );
    let lab = castle.lab().unwrap();
    assert_eq!(
        castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap()
            .iter()
            .filter(|v| !v.template)
            .count(),
        3
    );
    assert_eq!(lab.tailscale.devices().len(), 3);
    assert_eq!(lab.tailscale.live_keys(), 1);
}

/// A permanent fault at each step in turn: the run ends naming the step, the journal
/// is consistent, and once the fault is gone `--resume` finishes without redoing
/// finished steps and without duplicate VMs, keys or devices.
#[tokio::test(start_paused = true)]
async fn a_permanent_fault_at_each_step_then_resume() {
    type Inject = fn(&castle_core::lab::Lab);
    type Clear = fn(&castle_core::lab::Lab);
    let cases: Vec<(&str, Inject, Clear)> = vec![
        (
            "tailnet-key",
            |l| {
                l.tailscale
                    .fail_permanently("create_key", "tags not permitted")
                    .unwrap()
            },
            |l| l.tailscale.clear_faults(),
        ),
        (
            "vault-jwt",
            |l| l.vault.fail_permanently("sys/auth", "permission denied"),
            |l| l.vault.clear_faults(),
        ),
        (
            "vault-db",
            |l| {
                l.vault
                    .fail_permanently("sys/mounts/database", "permission denied")
            },
            |l| l.vault.clear_faults(),
        ),
        (
            "platform/cp-1",
            |l| {
                l.proxmox
                    .fail_permanently("clone_vm", "Permission check failed (/vms/421, VM.Clone)")
                    .unwrap()
            },
            |l| l.proxmox.clear_faults(),
        ),
        (
            "bootstrap",
            |l| {
                l.talos
                    .fail_permanently("bootstrap", "bootstrap refused")
                    .unwrap()
            },
            |l| l.talos.clear_faults(),
        ),
        (
            "engine",
            |l| {
                l.cluster
                    .fail_permanently("apply:ConfigMap", "admission denied")
            },
            |l| l.cluster.clear_faults(),
        ),
        (
            "networking",
            |l| {
                l.cluster
                    .fail_permanently("apply:L2Advertisement", "admission denied")
            },
            |l| l.cluster.clear_faults(),
        ),
        (
            "storage",
            |l| {
                l.cluster
                    .fail_permanently("apply:StorageClass", "admission denied")
            },
            |l| l.cluster.clear_faults(),
        ),
        (
            "gitops",
            |l| {
                l.cluster
                    .fail_permanently("apply:GitRepository", "admission denied")
            },
            |l| l.cluster.clear_faults(),
        ),
        (
            "verify",
            |l| l.cluster.fail_permanently("probe", "TLS handshake failed"),
            |l| l.cluster.clear_faults(),
        ),
    ];
    for (step, inject, clear) in cases {
        let (dir, config) = lab_copy(paused);
        let castle = Castle::open(&config).unwrap();
        let lab = castle.lab().unwrap();
        inject(lab);
        let first = castle.create(RunOptions::default()).await.unwrap();
        let err = first
            .error
            .unwrap_or_else(|| panic!("{step}: the fault must stop the run"))
            .to_string();
        assert!(err.contains(&format!("`{step}`")), "{step}: {err}");
        let journal = Journal::peek(dir.path()).unwrap();
        assert_eq!(
            format!("{:?}", journal.steps[step].status),
            "Failed",
            "{step}"
        );
        let done_before: Vec<String> = journal
            .steps
            .iter()
            .filter(|(_, r)| format!("{:?}", r.status) == "Done")
            .map(|(id, _)| id.clone())
            .collect();

        clear(lab);
        let second = castle
            .create(RunOptions {
                resume: true,
                ..RunOptions::default()
            })
            .await
            .unwrap();
        assert!(
            second.error.is_none(),
            "{step}: {:?}",
            second.error.map(|e| e.to_string())
        );
        for id in &done_before {
            let s = second.report.steps.iter().find(|s| &s.id == id).unwrap();
            let in_memory = ["secrets", "tailnet-key", "vault-jwt", "talos", "bootstrap"]
                .contains(&id.as_str());
            assert!(
                s.status == "skipped" || in_memory,
                "{step}: finished step {id} was redone"
            );
        }
        let vms = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap();
        assert_eq!(
            vms.iter().filter(|v| !v.template).count(),
            3,
            "{step}: no duplicate VMs"
        );
        assert_eq!(
            lab.tailscale.devices().len(),
            3,
            "{step}: no duplicate devices"
        );
        assert_eq!(lab.tailscale.live_keys(), 1, "{step}: one live key");
    }
}
