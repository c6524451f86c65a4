//! Issue 13: the lab answers as the real servers do (an older Proxmox VE, a
//! pool-scoped token, clones that are nameless for a while, a lost mint answer),
//! and rebirth, resume and destroy still converge.

use std::time::Duration;

use castle_core::castle::{Castle, RunOptions};
use castle_core::journal::Journal;
use castle_proxmox::{PowerState, ProxmoxApi as _};
use castle_tests::{lab_copy, paused};

fn with_lab_setting(setting: &'static str) -> impl FnOnce(String) -> String {
    move |t| paused(t).replace("[lab]\n", &format!("[lab]\n{setting}\n"))
}

async fn create(castle: &Castle, resume: bool) {
    let summary = castle
        .create(RunOptions {
            resume,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
}

async fn destroy_leaves_nothing(castle: &Castle) {
    let d = castle.destroy(RunOptions::default(), false).await.unwrap();
    assert!(d.error.is_none(), "{:?}", d.error.map(|e| e.to_string()));
    let status = castle.status().await.unwrap();
    assert!(status.nothing_left(), "{}", status.render());
}

/// `[lab] proxmox_server = "older"`: every Proxmox error carries its text only in
/// the reason phrase (pve-http-server before 5.2.0), so the first status probe of a
/// VM to be created must still read as "no such VM".
#[tokio::test(start_paused = true)]
async fn the_lab_against_an_older_proxmox_rebirths_resumes_and_destroys() {
    let (_dir, config) = lab_copy(with_lab_setting("proxmox_server = \"older\""));
    let castle = Castle::open(&config).unwrap();
    create(&castle, false).await;
    create(&castle, true).await;
    destroy_leaves_nothing(&castle).await;
}

/// `[lab] proxmox_token_pool`: the token's rights come from the pool `castle`, so
/// the VMs must be cloned into it (`[proxmox] pool`), and existence is probed with
/// `nextid?vmid=N`.
#[tokio::test(start_paused = true)]
async fn the_lab_with_a_pool_scoped_token_rebirths_and_destroys() {
    let (_dir, config) = lab_copy(|t| {
        with_lab_setting("proxmox_token_pool = \"castle\"")(t).replace(
            "clone_concurrency = 8\n",
            "clone_concurrency = 8\npool = \"castle\"\n",
        )
    });
    let castle = Castle::open(&config).unwrap();
    create(&castle, false).await;
    destroy_leaves_nothing(&castle).await;
}

/// Runs a create and drops it three modelled seconds in, as a crash would: the
/// clones are still copying their first disk, nameless and `unknown` in the listing.
async fn interrupted_during_the_clones(castle: &Castle, dir: &std::path::Path) {
    let run =
        tokio::time::timeout(Duration::from_secs(3), castle.create(RunOptions::default())).await;
    assert!(run.is_err(), "the run was still going");
    let lab = castle.lab().unwrap();
    let vms = lab.proxmox.list_vms().await.unwrap();
    assert!(
        vms.iter()
            .any(|v| v.status == PowerState::Unknown && v.name.is_empty()),
        "a nameless clone in the listing: {vms:?}"
    );
    let journal = Journal::peek(dir).unwrap();
    // Each node's unit journals its own clone's intent before sending it.
    let clones: Vec<_> = journal
        .steps
        .iter()
        .filter(|(id, _)| id.starts_with("platform/"))
        .filter_map(|(_, r)| r.outputs["clones"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(
        clones.len(),
        3,
        "the clone intents were journaled before the clones were sent: {clones:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_clone_then_resume_finishes() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    interrupted_during_the_clones(&castle, dir.path()).await;
    create(&castle, true).await;
    let lab = castle.lab().unwrap();
    let vms = lab.proxmox.list_vms().await.unwrap();
    assert_eq!(vms.iter().filter(|v| !v.template).count(), 3, "{vms:?}");
    assert!(
        vms.iter()
            .filter(|v| !v.template)
            .all(|v| v.has_tag("castle") && v.status == PowerState::Running)
    );
    destroy_leaves_nothing(&castle).await;
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_clone_then_destroy_leaves_nothing() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    interrupted_during_the_clones(&castle, dir.path()).await;
    destroy_leaves_nothing(&castle).await;
    let left = castle.lab().unwrap().proxmox.list_vms().await.unwrap();
    assert!(left.iter().all(|v| v.template), "{left:?}");
}

/// The first mint's answer is lost after the control plane made the key: the
/// tailnet-key step finds that key by the run's description and revokes it.
#[tokio::test(start_paused = true)]
async fn a_lost_mint_answer_leaves_exactly_one_live_key() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let lab = castle.lab().unwrap();
    lab.tailscale.lose_next_answer("create_key").unwrap();
    create(&castle, false).await;
    assert_eq!(lab.tailscale.live_keys(), 1);
    assert_eq!(lab.tailscale.devices().len(), 3);
    destroy_leaves_nothing(&castle).await;
}

/// A journal written before the per-node units (format 1: the whole `platform`
/// step recorded its clone intents in `platform.outputs.clones`), left by a run
/// killed while its clones copied: reading it moves each intent to its node's unit,
/// and the resume finishes those very clones: three VMs, none cloned twice.
#[tokio::test(start_paused = true)]
async fn a_format_1_journal_left_mid_clone_resumes_without_a_second_clone() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    interrupted_during_the_clones(&castle, dir.path()).await;
    // Rewrite the journal as the earlier format had it.
    let path = dir.path().join(".castle/state.json");
    let mut journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let steps = journal["steps"].as_object_mut().unwrap();
    let mut clones = Vec::new();
    steps.retain(|id, record| {
        if id.starts_with("platform/") {
            clones.extend(
                record["outputs"]["clones"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        !id.contains('/') && id != "bootstrap"
    });
    assert_eq!(clones.len(), 3);
    steps.insert(
        "platform".into(),
        serde_json::json!({"status": "running", "fingerprint": "", "outputs": {"clones": clones},
            "attempts": 1, "run_id": "old", "duration_ms": 0}),
    );
    journal["version"] = 1.into();
    std::fs::write(&path, journal.to_string()).unwrap();
    let migrated = Journal::peek(dir.path()).unwrap();
    for node in ["cp-1", "worker-1", "worker-2"] {
        assert_eq!(
            migrated.steps[&format!("platform/{node}")].outputs["clones"][0]["name"],
            format!("lab-{node}")
        );
    }

    let clones_before = castle.lab().unwrap().proxmox.calls("clone_vm");
    let castle = Castle::open(&config).unwrap();
    let (rec, events) = {
        let r = castle_core::events::Recorder::new();
        (
            r.clone(),
            castle_core::events::Events::new().with(std::sync::Arc::new(r)),
        )
    };
    let summary = castle
        .create(RunOptions {
            resume: true,
            events,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    assert!(
        rec.events().iter().any(|e| matches!(e, castle_core::events::Event::StateNotice { message } if message.contains("format 1"))),
        "the run says it migrated the journal"
    );
    let lab = castle.lab().unwrap();
    assert_eq!(
        lab.proxmox.calls("clone_vm"),
        0,
        "no clone sent by the resume ({clones_before} before)"
    );
    let vms = lab.proxmox.list_vms().await.unwrap();
    assert_eq!(vms.iter().filter(|v| !v.template).count(), 3, "{vms:?}");
    for node in ["cp-1", "worker-1", "worker-2"] {
        let unit = summary
            .report
            .steps
            .iter()
            .find(|s| s.id == format!("platform/{node}"))
            .unwrap();
        assert_eq!(unit.status, "done");
    }
    destroy_leaves_nothing(&castle).await;
}

/// Destroy is per node too: each VM goes in its own unit, side by side; one that
/// cannot be deleted (delete protection) fails alone, the others are gone, and
/// once it can be, a second destroy finishes.
#[tokio::test(start_paused = true)]
async fn destroy_deletes_each_node_in_its_own_unit() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    create(&castle, false).await;
    let lab = castle.lab().unwrap();
    lab.proxmox.set_protection(422, true).unwrap();
    let first = castle.destroy(RunOptions::default(), false).await.unwrap();
    let err = first
        .error
        .expect("the protected VM stops its unit")
        .to_string();
    assert!(
        err.contains("`platform/worker-1`") && err.contains("protection"),
        "{err}"
    );
    let unit = |report: &castle_core::report::Report, node: &str| {
        report
            .steps
            .iter()
            .find(|s| s.id == format!("platform/{node}"))
            .cloned()
            .unwrap()
    };
    let (cp, w2) = (unit(&first.report, "cp-1"), unit(&first.report, "worker-2"));
    assert_eq!((cp.status.as_str(), w2.status.as_str()), ("done", "done"));
    assert!(
        w2.start_ms < cp.end_ms && cp.start_ms < w2.end_ms,
        "side by side: {cp:?} {w2:?}"
    );
    assert_eq!(unit(&first.report, "worker-1").status, "failed");
    let vms: Vec<u32> = lab
        .proxmox
        .list_vms()
        .await
        .unwrap()
        .iter()
        .filter(|v| !v.template)
        .map(|v| v.vmid)
        .collect();
    assert_eq!(vms, [422]);
    let journal = Journal::peek(dir.path()).unwrap();
    assert!(!journal.steps.contains_key("platform/cp-1"));
    assert!(journal.steps.contains_key("platform/worker-1"));

    lab.proxmox.set_protection(422, false).unwrap();
    destroy_leaves_nothing(&castle).await;
}

/// Killed mid-pipeline: ten nodes, two clones at a time, so when the run stops
/// the control plane installs while workers are still cloning (two nameless clones
/// in flight) and the rest wait for a slot. The resume finishes each node where it
/// stood: the clones in flight are resumed, not sent again; ten VMs, no duplicate.
#[tokio::test(start_paused = true)]
async fn killed_mid_pipeline_the_resume_finishes_each_node_without_a_duplicate() {
    let (dir, config) = lab_copy(|t| {
        castle_tests::with_nodes(10)(paused(t))
            .replace("clone_concurrency = 8\n", "clone_concurrency = 2\n")
    });
    let castle = Castle::open(&config).unwrap();
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        castle.create(RunOptions::default()),
    )
    .await;
    assert!(run.is_err(), "the run was still going");
    let journal = Journal::peek(dir.path()).unwrap();
    let status = |id: &str| journal.steps.get(id).map(|r| format!("{:?}", r.status));
    assert_eq!(
        status("talos/cp-1").as_deref(),
        Some("Done"),
        "cp-1 is installing"
    );
    let cloning: Vec<&String> = journal
        .steps
        .iter()
        .filter(|(id, r)| {
            id.starts_with("platform/worker") && format!("{:?}", r.status) == "Running"
        })
        .map(|(id, _)| id)
        .collect();
    assert!(cloning.len() >= 2, "workers still cloning: {cloning:?}");
    let lab = castle.lab().unwrap();
    let nameless = lab
        .proxmox
        .list_vms()
        .await
        .unwrap()
        .iter()
        .filter(|v| v.name.is_empty())
        .count();
    assert_eq!(nameless, 2, "two clones in flight when it stopped");
    drop(castle);

    let castle = Castle::open(&config).unwrap();
    let summary = castle
        .create(RunOptions {
            resume: true,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    let lab = castle.lab().unwrap();
    let vms = lab.proxmox.list_vms().await.unwrap();
    let ours: Vec<u32> = vms.iter().filter(|v| !v.template).map(|v| v.vmid).collect();
    assert_eq!(ours, (1000..1010).collect::<Vec<u32>>());
    assert!(
        vms.iter()
            .filter(|v| !v.template)
            .all(|v| v.has_tag("castle"))
    );
    let outcome = |node: &str| {
        let id = format!("platform/{node}");
        let r = castle_core::journal::Journal::peek(dir.path()).unwrap();
        r.steps[&id].outputs["outcome"].as_str().map(str::to_string)
    };
    assert_eq!(
        outcome("cp-1"),
        Some("created".into()),
        "done before: skipped"
    );
    let resumed = (1..10)
        .filter(|i| outcome(&format!("worker-{i}")).as_deref() == Some("resumed"))
        .count();
    assert_eq!(
        resumed, 2,
        "the clones in flight were finished, not sent again"
    );
    assert_eq!(lab.tailscale.devices().len(), 10);
}
