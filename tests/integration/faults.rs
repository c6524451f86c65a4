use castle_core::castle::{Castle, RunOptions};
use castle_core::engine::ExecOptions;
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
        let exec = ExecOptions {
            retry: castle_core::engine::RetryPolicy::standard().with_max_attempts(12),
            ..ExecOptions::default()
        };
        let summary = castle
            .create(RunOptions {
                exec: Some(exec),
                ..RunOptions::default()
            })
            .await
            .unwrap();
        assert!(
            summary.error.is_none(),
            "seed {seed}: {:?}",
            summary.error.map(|e| e.to_string())
        );
        let retried = summary.report.steps.iter().map(|s| s.attempts).sum::<u32>();
        assert!(
            retried > 11,
            "seed {seed}: faults were injected and retried ({retried} attempts)"
        );
        let lab = castle.lab().unwrap();
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
