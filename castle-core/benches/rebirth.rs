//! `cargo bench -p castle-core --bench rebirth`: where a rebirth's time goes.
//!
//! Everything runs against the lab on tokio's paused clock at full modelled speed,
//! so every number is exact and repeatable:
//! - the lab rebirth's makespan and critical path, and the makespan the reference
//!   setup's layer-by-layer order would take with the same step durations;
//! - makespan for clusters of 3, 10 and 50 nodes;
//! - the orchestrator's own CPU time and peak memory for one rebirth;
//! - readiness detection latency of the watch-based waits against a 5 s poll.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use castle_core::castle::{Castle, RunOptions};
use castle_core::report::Report;
use castle_kube::{ClusterApi, Condition, Latency, MockCluster, ObjectRef};
use serde_json::json;

fn lab_dir(nodes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    for sub in ["", "secrets", "manifests", "charts"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let text = std::fs::read_to_string(src.join("castle.toml"))
        .unwrap()
        .replace("time_scale = 0.02", "time_scale = 1.0");
    let start = text.find("[[nodes]]").unwrap();
    let end = text.find("[talos]").unwrap();
    let mut blocks = String::new();
    for i in 0..nodes {
        let (name, role) = if i == 0 {
            ("cp-1".to_string(), "controlplane")
        } else {
            (format!("worker-{i}"), "worker")
        };
        blocks.push_str(&format!(
            "[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\nvmid = {}\nip = \"192.168.1.{}/24\"\ncores = 4\nmemory_mib = 8192\ndisk_gib = 40\n\n",
            1000 + i,
            20 + i
        ));
    }
    let text = format!("{}{}{}", &text[..start], blocks, &text[end..])
        .replace("vmid_range = [420, 429]", "vmid_range = [1000, 1099]");
    std::fs::write(dir.path().join("castle.toml"), text).unwrap();
    dir
}

async fn rebirth(nodes: usize) -> Report {
    let dir = lab_dir(nodes);
    let castle = Castle::open(&dir.path().join("castle.toml")).unwrap();
    let summary = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    summary.report
}

/// The reference setup ran in layers: each waits for the whole previous one.
fn layered(report: &Report) -> u64 {
    let d: BTreeMap<&str, u64> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.duration_ms))
        .collect();
    // Its engine layer installed ESO; Flux came with the GitOps layer, which ran
    // beside storage once networking was done.
    let layers: [&[&str]; 11] = [
        &["secrets"],
        &["tailnet-key"],
        &["vault-jwt", "vault-db"],
        &["platform"],
        &["talos"],
        &["engine"],
        &["flux"],
        &["eso"],
        &["networking"],
        &["storage", "gitops"],
        &["verify"],
    ];
    layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|s| d.get(s).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .sum()
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// CPU seconds of this process (utime + stime from /proc, 100 ticks per second).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

async fn readiness_latency() -> (f64, f64) {
    let cluster = MockCluster::new().with_latency(Latency::lab());
    cluster
        .apply(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}),
            false,
        )
        .await
        .unwrap();
    let (mut watch_total, mut poll_total, mut n) = (0.0, 0.0, 0.0);
    for i in 0..20 {
        let name = format!("app{}", "x".repeat(i));
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "b"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/lab/app:1"}]}}}});
        let target = ObjectRef::new("apps/v1", "Deployment", Some("b"), &name);
        // The watch: how long after readiness does the wait return?
        let t0 = tokio::time::Instant::now();
        cluster.apply(&deploy, false).await.unwrap();
        cluster
            .wait(
                &Condition::Rollout(target.clone()),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
        let ready_at = t0.elapsed().as_secs_f64();
        let ready_model = 25.0 + (name.len() % 5) as f64 * 3.0;
        watch_total += (ready_at - ready_model - 0.02).max(0.0);
        // A 5 s polling loop sees it at the next multiple of 5 s.
        poll_total += (ready_model / 5.0).ceil() * 5.0 - ready_model;
        n += 1.0;
    }
    (watch_total / n * 1000.0, poll_total / n * 1000.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let cpu0 = cpu_ms();
    let report = rt.block_on(rebirth(3));
    let cpu = cpu_ms() - cpu0;
    println!("lab rebirth (3 nodes, modelled time on a paused clock)");
    println!("  makespan             {}", secs(report.makespan_ms));
    println!(
        "  critical path        {}",
        report.critical_path.join(" -> ")
    );
    let layers = layered(&report);
    println!(
        "  reference layering   {} (same step durations, layer by layer)",
        secs(layers)
    );
    println!(
        "  saved                {:.0}%",
        100.0 * (1.0 - report.makespan_ms as f64 / layers as f64)
    );
    print!("{}", report.table());
    println!(
        "orchestrator cost for one rebirth: {cpu} ms CPU, peak RSS {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    for n in [3, 10, 50] {
        let r = rt.block_on(rebirth(n));
        println!(
            "cluster of {n:>2} nodes: makespan {}, layered {}",
            secs(r.makespan_ms),
            secs(layered(&r))
        );
    }
    let (watch, poll) = rt.block_on(readiness_latency());
    println!(
        "readiness detection after the condition turns true: watch {watch:.0} ms, 5 s poll {poll:.0} ms (averages over 20 rollouts)"
    );
}
