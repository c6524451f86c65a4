//! `cargo bench -p castle-core --bench rebirth`: where a rebirth's time goes.
//!
//! Everything runs against the lab on tokio's paused clock at full modelled speed,
//! so every number is exact and repeatable:
//! - the lab rebirth's makespan, critical path, slack and gains;
//! - the reference setup (create.sh over Terragrunt layers) charged what it really
//!   spends: the same modelled work, layer by layer, plus Terraform's per-layer
//!   init/refresh/plan from its logs, its polling loops and Helm's waits, each
//!   assumption printed beside its number;
//! - makespan for clusters of 3, 10 and 50 nodes;
//! - the orchestrator's own CPU time and peak memory for one rebirth.
//!
//! Readiness detection is measured on the real clock, not here:
//! `cargo bench -p castle-kube --bench readiness`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use castle_core::castle::{Castle, RunOptions};
use castle_core::report::Report;

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

/// The reference setup's rebirth, layer by layer in create.sh's order (seeds 000 and
/// 003): each layer waits for the whole previous one.
struct Layer {
    name: &'static str,
    /// Castle's steps doing the layer's work; `parallel` runs them side by side
    /// (terragrunt run-all), else one after the other.
    steps: &'static [&'static str],
    parallel: bool,
    /// A Terragrunt layer (pays init/refresh/plan); else create.sh's own bash.
    terraform: bool,
    /// The layer's whole logged time, for layers whose work is a handful of API
    /// calls: their log is the only honest figure (it holds the work and the
    /// overhead together).
    logged_ms: Option<u64>,
}

const LAYERS: [Layer; 8] = [
    Layer {
        name: "secrets",
        steps: &["secrets"],
        parallel: false,
        terraform: true,
        logged_ms: Some(16_000),
    },
    Layer {
        name: "tailnet key (bash, curl)",
        steps: &["tailnet-key"],
        parallel: false,
        terraform: false,
        logged_ms: None,
    },
    Layer {
        name: "vault-jwt-config",
        steps: &["vault-jwt"],
        parallel: false,
        terraform: true,
        logged_ms: Some(18_000),
    },
    Layer {
        name: "vault-db-config",
        steps: &["vault-db"],
        parallel: false,
        terraform: true,
        logged_ms: Some(18_000),
    },
    Layer {
        name: "platform (VMs, then Talos)",
        steps: &["platform", "talos"],
        parallel: false,
        terraform: true,
        logged_ms: None,
    },
    // Its engine layer installed ESO itself (a helm_release), then its store.
    Layer {
        name: "engine (with ESO)",
        steps: &["engine", "eso"],
        parallel: false,
        terraform: true,
        logged_ms: None,
    },
    // Flux's install was part of its gitops layer; side by side here, which
    // undercharges the reference rather than overcharge it.
    Layer {
        name: "networking + storage + gitops (run-all)",
        steps: &["networking", "storage", "flux", "gitops"],
        parallel: true,
        terraform: true,
        logged_ms: None,
    },
    Layer {
        name: "verify (bash)",
        steps: &["verify"],
        parallel: false,
        terraform: false,
        logged_ms: None,
    },
];

/// Terraform init + refresh + plan of a layer, from the three light layers' logged
/// 16, 18 and 18 s (seed 000), each a few API calls of work.
const TERRAFORM_LOW_MS: u64 = 16_000;
const TERRAFORM_HIGH_MS: u64 = 18_000;

/// What the reference's loops add to a step: the expected detection delay of a
/// poll with period P is P/2 (the readiness falls at a random phase of the loop;
/// `cargo bench -p castle-kube --bench readiness` measures it), against a watch's
/// few milliseconds.
const POLLS: [(&str, u64, &str); 3] = [
    (
        "networking",
        2_500,
        "MetalLB webhook EndpointSlice loop, `sleep 5` (seed 002): P/2",
    ),
    (
        "eso",
        1_000,
        "helm_release.external_secrets waits; Helm v3 polls every 2 s (pkg/kube/wait.go): P/2",
    ),
    (
        "storage",
        1_000,
        "Longhorn's helm_release (assumed) waits the same way: P/2",
    ),
];

/// One layer's time from its steps' times: side by side or one after the other.
fn combine(layer: &Layer, took: impl Fn(&str) -> u64) -> u64 {
    let each = layer.steps.iter().map(|s| took(s));
    if layer.parallel {
        each.max().unwrap_or(0)
    } else {
        each.sum()
    }
}

/// The reference's time for the lab's modelled work, low and high, printing each
/// layer's charge beside its assumption.
fn reference(report: &Report, print: bool) -> (u64, u64) {
    let d: BTreeMap<&str, u64> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.duration_ms))
        .collect();
    let work = |id: &str| d.get(id).copied().unwrap_or(0);
    let polled = |id: &str| {
        work(id)
            + POLLS
                .iter()
                .filter(|(s, _, _)| *s == id)
                .map(|(_, ms, _)| ms)
                .sum::<u64>()
    };
    let (mut low, mut high) = (0, 0);
    for l in &LAYERS {
        let bare = combine(l, work);
        let with_polls = combine(l, polled);
        let polls = if with_polls > bare {
            format!(" + polling {}", secs(with_polls - bare))
        } else {
            String::new()
        };
        let (lo, hi, why) = match (l.logged_ms, l.terraform) {
            (Some(logged), _) => (
                logged.max(with_polls),
                logged.max(with_polls),
                format!("its logged total (its modelled work: {})", secs(bare)),
            ),
            (None, true) => (
                with_polls + TERRAFORM_LOW_MS,
                with_polls + TERRAFORM_HIGH_MS,
                format!(
                    "modelled work {}{polls} + Terraform init/refresh/plan 16-18 s",
                    secs(bare)
                ),
            ),
            (None, false) => (
                with_polls,
                with_polls,
                format!("modelled work {}{polls}", secs(bare)),
            ),
        };
        low += lo;
        high += hi;
        if print {
            println!(
                "    {:<40} {:>7} - {:>7}   {why}",
                l.name,
                secs(lo),
                secs(hi)
            );
        }
    }
    (low, high)
}

/// The same steps layer by layer with no overhead at all: what ordering alone costs.
fn layered(report: &Report) -> u64 {
    let d: BTreeMap<&str, u64> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.duration_ms))
        .collect();
    LAYERS
        .iter()
        .map(|l| combine(l, |id| d.get(id).copied().unwrap_or(0)))
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
        "  reference layering   {} (same step durations, layer by layer, no overhead)",
        secs(layers)
    );
    println!("  the reference setup charged what it really spends (seeds 000, 002, 003):");
    let (low, high) = reference(&report, true);
    for (step, ms, why) in POLLS {
        println!(
            "    polling in {step:<29} {:>7}             {why}",
            secs(ms)
        );
    }
    for why in [
        "fixed sleeps: none are left in the final create.sh",
        "the Flux convergence and LoadBalancer IP waits: how create.sh waits for them is not recorded",
        "the post-Flux PGO loops (5 s, 10 s): removed in seed 000, and not work the lab does",
        "kubectl's start-up on each poll",
    ] {
        println!("    not charged: {why}");
    }
    println!(
        "  reference estimate   {} - {} vs Castle {} ({:.0}-{:.0}% less)",
        secs(low),
        secs(high),
        secs(report.makespan_ms),
        100.0 * (1.0 - report.makespan_ms as f64 / low as f64),
        100.0 * (1.0 - report.makespan_ms as f64 / high as f64)
    );
    println!(
        "  the reference's own logs: 289 s of layers before Flux convergence (seed 000: 16+18+18+101+21+115 s), 8 min 20 s (seed 004), 9-10 min (seed 003)"
    );
    print!("{}", report.table());
    println!(
        "orchestrator cost for one rebirth: {cpu} ms CPU, peak RSS {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    for n in [3, 10, 50] {
        let r = rt.block_on(rebirth(n));
        let (low, high) = reference(&r, false);
        println!(
            "cluster of {n:>2} nodes: makespan {}, layered {}, reference estimate {} - {}",
            secs(r.makespan_ms),
            secs(layered(&r)),
            secs(low),
            secs(high)
        );
    }
}
