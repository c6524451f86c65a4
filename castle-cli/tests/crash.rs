//! SIGKILL at seeded points of a lab rebirth, then `--resume`: the run converges
//! with nothing duplicated and nothing leaked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

fn lab(dir: &Path) -> std::path::PathBuf {
    let config = common::copy_lab(dir);
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replace("time_scale = 0.02", "time_scale = 0.01");
    std::fs::write(&config, t).unwrap();
    config
}

fn castle(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Kill points from a seeded stream (SplitMix64), so every run of the test kills
/// at the same moments and a failure names its seed.
fn kill_points(seed: u64, n: usize, lo_ms: u64, hi_ms: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            lo_ms + (z ^ (z >> 31)) % (hi_ms - lo_ms)
        })
        .collect()
}

/// Every VM, tailnet device and auth key of the lab's world appears once: no
/// duplicate clone, no `name-1` device, at most one live key.
fn assert_no_duplicates(state: &serde_json::Value, what: &str) {
    let vms: Vec<&String> = state["proxmox"]["vms"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.as_str() != "9000")
        .collect();
    assert_eq!(vms, ["421", "422", "423"], "{what}: VMs {vms:?}");
    let devices: Vec<String> = state["tailscale"]["devices"]
        .as_object()
        .unwrap()
        .values()
        .filter(|d| d["device"]["connected"] == true)
        .map(|d| d["device"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = devices.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), devices.len(), "{what}: devices {devices:?}");
    assert_eq!(
        sorted,
        [
            "lab-cp-1.tail0000.ts.net",
            "lab-worker-1.tail0000.ts.net",
            "lab-worker-2.tail0000.ts.net"
        ],
        "{what}: no `-1` names"
    );
    let live = state["tailscale"]["keys"]
        .as_object()
        .unwrap()
        .values()
        .filter(|k| k["revoked"] == false)
        .count();
    assert!(live <= 1, "{what}: {live} live keys");
}

#[test]
fn killed_at_seeded_points_then_resumed_it_converges_without_duplicates() {
    // Twenty kill points over a ~4 s run: platform, talos and the cluster steps.
    for (i, kill_ms) in kill_points(15, 20, 100, 4000).into_iter().enumerate() {
        let what = format!("kill {i} at {kill_ms} ms (seed 15)");
        let dir = tempfile::tempdir().unwrap();
        let config = lab(dir.path());
        let mut child = Command::new(env!("CARGO_BIN_EXE_castle"))
            .args(["create", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_ms));
        child.kill().unwrap();
        child.wait().unwrap();

        let resumed = castle(&config, &["create", "--resume"]);
        assert_eq!(
            resumed.status.code(),
            Some(0),
            "{what}: {}{}",
            String::from_utf8_lossy(&resumed.stdout),
            String::from_utf8_lossy(&resumed.stderr)
        );
        let again = castle(&config, &["create", "--resume"]);
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
            "{what}"
        );
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(".castle/lab/state.json")).unwrap(),
        )
        .unwrap();
        assert_no_duplicates(&state, &what);
        let destroyed = castle(&config, &["destroy"]);
        assert_eq!(destroyed.status.code(), Some(0), "{what}");
        let status = castle(&config, &["status"]);
        assert!(
            String::from_utf8_lossy(&status.stdout).contains("nothing left"),
            "{what}: {}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}

/// Killed while the clones still copy their first disk (nameless, `lock: clone`
/// only: qemu-server `clone_vm`), then `--resume` finishes, and destroy after the
/// same kill leaves nothing: the clone intents were journaled before the clones
/// were sent.
#[test]
fn killed_during_a_clone_then_resume_or_destroy_converges() {
    for then in ["resume", "destroy"] {
        let dir = tempfile::tempdir().unwrap();
        let config = lab(dir.path());
        // Slow enough that the nameless phase lasts about a second.
        let slow = std::fs::read_to_string(&config)
            .unwrap()
            .replace("time_scale = 0.01", "time_scale = 0.2");
        std::fs::write(&config, &slow).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_castle"))
            .args(["create", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The lab saves its world after every Proxmox change: kill as soon as it
        // holds a clone that has no name yet.
        let state = dir.path().join(".castle/lab/state.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&state).unwrap_or_default();
            if text.contains("\"staged\":{") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no clone was seen in flight"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let journal: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(".castle/state.json")).unwrap())
                .unwrap();
        // Each node's unit journaled its clone's intent before sending it.
        assert!(
            journal["steps"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(id, _)| id.starts_with("platform/"))
                .any(|(_, r)| r["outputs"]["clones"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())),
            "{then}: {journal}"
        );
        std::fs::write(
            &config,
            slow.replace("time_scale = 0.2", "time_scale = 0.01"),
        )
        .unwrap();
        if then == "resume" {
            let resumed = castle(&config, &["create", "--resume"]);
            assert_eq!(
                resumed.status.code(),
                Some(0),
                "{}{}",
                String::from_utf8_lossy(&resumed.stdout),
                String::from_utf8_lossy(&resumed.stderr)
            );
        }
        let destroyed = castle(&config, &["destroy"]);
        assert_eq!(
            destroyed.status.code(),
            Some(0),
            "{then}: {}{}",
            String::from_utf8_lossy(&destroyed.stdout),
            String::from_utf8_lossy(&destroyed.stderr)
        );
        let status = castle(&config, &["status"]);
        assert!(
            String::from_utf8_lossy(&status.stdout).contains("nothing left"),
            "{then}: {}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}
