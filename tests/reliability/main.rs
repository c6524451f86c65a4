//! The reliability suite: what a new user gets with the shipped defaults. Its output
//! is the table in the README (`cargo test -p castle-tests --test reliability --
//! --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use castle_core::castle::{Castle, RunOptions};
use castle_tests::{lab_copy, paused};

/// 10% transient faults on every call of every simulator, shipped defaults (no
/// raised attempts), one `create` per seed: every seed converges, with no
/// duplicate VM, device or key.
#[tokio::test(start_paused = true)]
async fn ten_percent_faults_shipped_defaults_one_create_twenty_seeds() {
    let mut held = 0;
    let mut rows = Vec::new();
    for seed in 1..=20u64 {
        let (_dir, config) = lab_copy(|t| {
            paused(t)
                .replace("seed = 7", &format!("seed = {seed}"))
                .replace("transient_fault_rate = 0.0", "transient_fault_rate = 0.1")
        });
        let castle = Castle::open(&config).unwrap();
        let summary = castle.create(RunOptions::default()).await.unwrap();
        let lab = castle.lab().unwrap();
        // The audit reads the world without faults.
        lab.proxmox.clear_faults();
        let vms = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap()
            .iter()
            .filter(|v| !v.template)
            .count();
        let ok = summary.error.is_none()
            && vms == 3
            && lab.tailscale.devices().len() == 3
            && lab.tailscale.live_keys() == 1;
        let step_retries: u32 = summary
            .report
            .steps
            .iter()
            .map(|s| s.attempts.saturating_sub(1))
            .sum();
        rows.push(format!(
            "seed {seed:>2}: {}  step retries {step_retries}  {}",
            if ok { "converged" } else { "FAILED" },
            summary.error.map(|e| e.to_string()).unwrap_or_default()
        ));
        held += usize::from(ok);
    }
    println!("10% transient faults, shipped defaults, one create:");
    for r in &rows {
        println!("  {r}");
    }
    println!("held {held}/20");
    assert_eq!(held, 20, "{}", rows.join("\n"));
}

/// The same faults on a twenty-node lab, where every node flows through its own
/// units (its clone, its config, its join) and clones queue for their storage's
/// slots: every seed converges, with twenty VMs and twenty devices.
#[tokio::test(start_paused = true)]
async fn ten_percent_faults_on_twenty_nodes_each_on_its_own_five_seeds() {
    let mut held = 0;
    let mut rows = Vec::new();
    for seed in 1..=5u64 {
        let (_dir, config) = lab_copy(|t| {
            castle_tests::with_nodes(20)(paused(t))
                .replace("seed = 7", &format!("seed = {seed}"))
                .replace("transient_fault_rate = 0.0", "transient_fault_rate = 0.1")
        });
        let castle = Castle::open(&config).unwrap();
        let summary = castle.create(RunOptions::default()).await.unwrap();
        let lab = castle.lab().unwrap();
        lab.proxmox.clear_faults();
        let vms = castle_proxmox::ProxmoxApi::list_vms(&lab.proxmox)
            .await
            .unwrap()
            .iter()
            .filter(|v| !v.template)
            .count();
        let ok = summary.error.is_none()
            && vms == 20
            && lab.tailscale.devices().len() == 20
            && lab.tailscale.live_keys() == 1;
        let unit_retries: u32 = summary
            .report
            .steps
            .iter()
            .filter(|s| s.node.is_some())
            .map(|s| s.attempts.saturating_sub(1))
            .sum();
        rows.push(format!(
            "seed {seed}: {}  node unit retries {unit_retries}  makespan {:.1}s  {}",
            if ok { "converged" } else { "FAILED" },
            summary.report.makespan_ms as f64 / 1000.0,
            summary.error.map(|e| e.to_string()).unwrap_or_default()
        ));
        held += usize::from(ok);
    }
    println!("10% transient faults, twenty nodes, shipped defaults, one create:");
    for r in &rows {
        println!("  {r}");
    }
    println!("held {held}/5");
    assert_eq!(held, 5, "{}", rows.join("\n"));
}
