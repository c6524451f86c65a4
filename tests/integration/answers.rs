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
