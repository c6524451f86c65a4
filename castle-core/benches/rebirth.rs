//! `cargo bench -p castle-core --bench rebirth`: where a rebirth's time goes.
//!
//! Everything runs against the lab on tokio's paused clock at full modelled speed,
//! so every number is exact and repeatable:
//! - the lab rebirth's makespan, critical path, slack and gains;
//! - the reference setup (create.sh over Terragrunt layers) charged what it really
//!   spends: the same modelled work, layer by layer, plus Terraform's per-layer
//!   init/refresh/plan from its logs, its polling loops and Helm's waits, each
//!   assumption printed beside its number;
//! - makespan for clusters of 3, 10 and 50 nodes, each beside the lower bound of
//!   its own per-node chains;
//! - the whole process's CPU time and peak memory for one 50-node lab rebirth,
//!   measured in a child process of its own (simulators included).
//!
//! Readiness detection is measured on the real clock, not here:
//! `cargo bench -p castle-kube --bench readiness`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use castle_core::castle::{Castle, RunOptions};
use castle_core::report::Report;

fn lab_dir(nodes: usize) -> tempfile::TempDir {
    lab_dir_with(nodes, |t| t)
}

/// The lab with `nodes` nodes and `edit` applied to its castle.toml.
fn lab_dir_with(nodes: usize, edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
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
    std::fs::write(dir.path().join("castle.toml"), edit(text)).unwrap();
    dir
}

async fn rebirth(nodes: usize) -> Report {
    rebirth_of(lab_dir(nodes)).await
}

async fn rebirth_of(dir: tempfile::TempDir) -> Report {
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
    /// (terragrunt run-all), else one after the other. A part may name several
    /// steps, joined by `+`, whose span in Castle's run (from the first start to the
    /// last end) is its work: `platform*` is the platform step with its per-node
    /// units (every VM made), `talos/` the talos step's units only.
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
        steps: &["platform*", "talos", "talos/+bootstrap+join/"],
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

/// The time of one part of a layer in Castle's run: a step's duration, or for
/// a group (`platform*`: the step and its units; `talos/`: its units only; `+`
/// joins several) the span of its steps.
fn took(report: &Report, part: &str) -> u64 {
    let one = |pattern: &str, id: &str| match (pattern.strip_suffix('*'), pattern.strip_suffix('/'))
    {
        (Some(step), _) => id == step || id.starts_with(&format!("{step}/")),
        (_, Some(step)) => id.starts_with(&format!("{step}/")),
        _ => id == pattern,
    };
    if !part.contains(['*', '/', '+']) {
        return report
            .steps
            .iter()
            .find(|s| s.id == part)
            .map_or(0, |s| s.duration_ms);
    }
    let (mut first, mut last) = (u64::MAX, 0);
    for s in report
        .steps
        .iter()
        .filter(|s| part.split('+').any(|p| one(p, &s.id)))
    {
        if let (Some(a), Some(b)) = (s.start_ms, s.end_ms) {
            first = first.min(a);
            last = last.max(b);
        }
    }
    last.saturating_sub(first)
}

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
    let work = |id: &str| took(report, id);
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
    LAYERS
        .iter()
        .map(|l| combine(l, |id| took(report, id)))
        .sum()
}

/// A lower bound of the makespan from the run's own work: no schedule of the same
/// steps (each taking what it took, less its wait for a clone slot) ends before the
/// longest chain of dependencies, nor before the clone slots let the last clone
/// end (`ceil(n / k)` clones of the modelled linked-clone time one after another
/// per storage, from the first clone's start) plus what that node still needs by
/// the model (config, resize and start tasks, Talos's install, kubelet's start).
/// Returns the bound, the longest chain and the slots' bound.
fn lower_bound(report: &Report) -> (u64, Vec<String>, u64) {
    let by_id: BTreeMap<&str, &castle_core::report::StepTiming> =
        report.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let work = |id: &str| {
        by_id.get(id).map_or(0, |s| {
            s.duration_ms
                .saturating_sub(s.slot.as_ref().map_or(0, |w| w.waited_ms))
        })
    };
    // Earliest finish along dependencies (steps are in graph order).
    let mut finish: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
    for s in &report.steps {
        let before = s
            .deps
            .iter()
            .filter_map(|d| finish.get(d.as_str()).map(|(f, _)| (*f, d.as_str())))
            .max();
        let start = before.map_or(0, |(f, _)| f);
        finish.insert(s.id.as_str(), (start + work(&s.id), before.map(|(_, d)| d)));
    }
    let (mut id, chain_ms) = finish
        .iter()
        .max_by_key(|(_, (f, _))| *f)
        .map(|(id, (f, _))| (Some(*id), *f))
        .unwrap_or((None, 0));
    let mut chain = Vec::new();
    while let Some(i) = id {
        chain.push(i.to_string());
        id = finish.get(i).and_then(|(_, prev)| *prev);
    }
    chain.reverse();
    let (proxmox, talos) = (castle_proxmox::Latency::lab(), castle_talos::Latency::lab());
    let ms = |s: f64| (s * 1000.0) as u64;
    let clone_ms = ms(proxmox.linked_clone);
    let tail_ms =
        ms(proxmox.config + proxmox.resize + proxmox.start + talos.install + talos.kubelet);
    let mut slots: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for s in &report.steps {
        if let Some(w) = &s.slot {
            let e = slots
                .entry(w.name.as_str())
                .or_insert((0, w.capacity as u64, u64::MAX));
            e.0 += 1;
            e.2 = e.2.min(s.start_ms.unwrap_or(0));
        }
    }
    let slots_ms = slots
        .values()
        .map(|(n, k, t0)| t0 + n.div_ceil((*k).max(1)) * clone_ms + tail_ms)
        .max()
        .unwrap_or(0);
    (chain_ms.max(slots_ms), chain, slots_ms)
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

/// `cargo bench` runs this binary again with this variable set to a node count: the
/// child does one lab rebirth of that size and prints its own CPU and peak memory.
const COST_RUN: &str = "CASTLE_BENCH_COST_NODES";

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The child's part: one rebirth of `nodes`, then `cpu_ms simulators_ms
/// rss_before_kib peak_kib`.
fn cost_run(nodes: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let dir = lab_dir(nodes);
    let before = rss_kib();
    let cpu0 = cpu_ms();
    let castle = Castle::open(&dir.path().join("castle.toml")).unwrap();
    let report = rt
        .block_on(castle.create(RunOptions::default()))
        .unwrap()
        .report;
    let cpu = cpu_ms() - cpu0;
    assert_eq!(report.status, "succeeded");
    let simulators = castle.lab().unwrap().simulator_cpu().as_millis();
    println!("{cpu} {simulators} {before} {}", peak_rss_kib());
}

fn main() {
    if let Some(nodes) = std::env::var(COST_RUN).ok().and_then(|n| n.parse().ok()) {
        cost_run(nodes);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let report = rt.block_on(rebirth(3));
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
    let mut makespans = BTreeMap::new();
    let two_slots = |t: String| t.replace("clone_concurrency = 8", "clone_concurrency = 2");
    for (n, per_storage) in [(3, 8), (10, 8), (50, 8), (50, 2)] {
        let r = if per_storage == 8 {
            rt.block_on(rebirth(n))
        } else {
            println!(
                "the same, with 2 clone slots per storage (the earlier default, per template):"
            );
            rt.block_on(rebirth_of(lab_dir_with(n, two_slots)))
        };
        let (low, high) = reference(&r, false);
        let (bound, chain, slots) = lower_bound(&r);
        println!(
            "cluster of {n:>2} nodes: makespan {}, lower bound {} ({:+.1}%), layered {}, reference estimate {} - {}",
            secs(r.makespan_ms),
            secs(bound),
            100.0 * (r.makespan_ms as f64 / bound as f64 - 1.0),
            secs(layered(&r)),
            secs(low),
            secs(high)
        );
        println!(
            "  lower bound: longest chain of work {} ({}), clone slots {}",
            secs(chain_len(&r, &chain)),
            chain.join(" -> "),
            secs(slots)
        );
        let waits: Vec<u64> = r
            .steps
            .iter()
            .filter_map(|s| s.slot.as_ref().map(|w| w.waited_ms))
            .collect();
        println!(
            "  clone slots: {} clones, {} waited, {} in all, at most {}",
            waits.len(),
            waits.iter().filter(|w| **w > 0).count(),
            secs(waits.iter().sum()),
            secs(waits.iter().copied().max().unwrap_or(0))
        );
        if per_storage == 8 {
            makespans.insert(n, r.makespan_ms);
        }
    }
    println!(
        "makespan ratios: 10 nodes / 3 nodes {:.2}x, 50 nodes / 3 nodes {:.2}x",
        makespans[&10] as f64 / makespans[&3] as f64,
        makespans[&50] as f64 / makespans[&3] as f64
    );
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(COST_RUN, "50")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    let f: Vec<u64> = out
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(
        f.len(),
        4,
        "the child said: {out} {}",
        String::from_utf8_lossy(&child.stderr)
    );
    let (process, simulators) = (f[0], f[1]);
    println!(
        "orchestrator cost of a 50-node lab rebirth: {} ms CPU (the process {process} ms, less {simulators} ms metered inside the simulators' calls and the lab world's saves), peak RSS {:.1} MiB of the whole process, simulators included ({:.1} MiB before the run)",
        process.saturating_sub(simulators),
        f[3] as f64 / 1024.0,
        f[2] as f64 / 1024.0
    );
}

/// The length of a chain of work, as [`lower_bound`] counts it.
fn chain_len(report: &Report, chain: &[String]) -> u64 {
    chain
        .iter()
        .filter_map(|id| report.steps.iter().find(|s| &s.id == id))
        .map(|s| {
            s.duration_ms
                .saturating_sub(s.slot.as_ref().map_or(0, |w| w.waited_ms))
        })
        .sum()
}
