//! The `talos` step as real Talos judges it: resume against configured nodes,
//! three control planes behind a shared address.

use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Event, Events, Recorder};
use castle_tests::{lab_copy, paused};
use std::sync::Arc;

fn recorder() -> (Recorder, RunOptions) {
    let r = Recorder::new();
    let options = RunOptions {
        events: Events::new().with(Arc::new(r.clone())),
        ..RunOptions::default()
    };
    (r, options)
}

/// Once configured, a node's apid refuses any handshake without a client
/// certificate (Unavailable, internal/app/apid at v1.12.11). A resumed `talos` step
/// finds that out with a handshake probe and applies over mTLS, where the same
/// config changes nothing; before, it retried maintenance mode to its deadline.
#[tokio::test(start_paused = true)]
async fn resume_against_configured_nodes_applies_over_mtls_and_finishes() {
    let (dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let lab = castle.lab().unwrap();
    lab.talos
        .fail_permanently("bootstrap", "bootstrap refused")
        .unwrap();
    let first = castle.create(RunOptions::default()).await.unwrap();
    let err = first
        .error
        .expect("the bootstrap fault stops the run")
        .to_string();
    assert!(
        err.contains("talos") && err.contains("bootstrap refused"),
        "{err}"
    );
    for ip in ["192.168.1.211", "192.168.1.212", "192.168.1.213"] {
        assert_eq!(
            castle_talos::TalosApi::connection(&lab.talos, ip)
                .await
                .unwrap(),
            castle_talos::NodeConn::Mtls,
            "{ip} is configured and wants a client certificate"
        );
    }
    lab.talos.clear_faults();
    let (rec, options) = recorder();
    let second = castle
        .create(RunOptions {
            resume: true,
            ..options
        })
        .await
        .unwrap();
    assert!(
        second.error.is_none(),
        "{:?}",
        second.error.map(|e| e.to_string())
    );
    let bootstrap = second
        .report
        .steps
        .iter()
        .find(|s| s.id == "bootstrap")
        .unwrap();
    assert_eq!(
        (bootstrap.status.as_str(), bootstrap.attempts),
        ("done", 1),
        "no retries to a deadline"
    );
    // Each node's config was applied by the first run; its unit is done.
    for node in ["cp-1", "worker-1", "worker-2"] {
        let unit = second
            .report
            .steps
            .iter()
            .find(|s| s.id == format!("talos/{node}"))
            .unwrap();
        assert_eq!(unit.status, "skipped", "{node}");
    }
    assert!(
        rec.events().iter().any(
            |e| matches!(e, Event::StepProgress { message, .. } if message == "etcd bootstrapped")
        ),
        "the resumed bootstrap bootstrapped etcd"
    );

    // Forget that the configs were applied: each unit runs again, against a node
    // that wants mutual TLS, and applies the same config over it.
    let journal = dir.path().join(".castle/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
    for node in ["cp-1", "worker-1", "worker-2"] {
        state["steps"][format!("talos/{node}")]["fingerprint"] = "changed".into();
    }
    std::fs::write(&journal, state.to_string()).unwrap();
    let (rec, options) = recorder();
    let third = castle
        .create(RunOptions {
            resume: true,
            ..options
        })
        .await
        .unwrap();
    assert!(
        third.error.is_none(),
        "{:?}",
        third.error.map(|e| e.to_string())
    );
    let over_mtls = rec
        .events()
        .iter()
        .filter(|e| matches!(e, Event::StepProgress { message, .. } if message.contains("applied over mTLS")))
        .count();
    assert_eq!(
        over_mtls, 3,
        "every configured node took its config over mTLS"
    );
}

/// Three control planes behind `cluster.vip`: each carries the Layer2VIPConfig,
/// etcd is bootstrapped exactly once (on the first), the others join.
#[tokio::test(start_paused = true)]
async fn three_control_planes_share_the_vip_and_bootstrap_once() {
    let (_dir, config) = lab_copy(|t| {
        paused(t).replace(
            "[[nodes]]\nname = \"worker-1\"",
            "[[nodes]]\nname = \"cp-2\"\nrole = \"controlplane\"\nvmid = 424\nip = \"192.168.1.214/24\"\n\n[[nodes]]\nname = \"cp-3\"\nrole = \"controlplane\"\nvmid = 425\nip = \"192.168.1.215/24\"\n\n[[nodes]]\nname = \"worker-1\"",
        )
    });
    let castle = Castle::open(&config).unwrap();
    assert_eq!(castle.config().control_planes().count(), 3);
    let rendered = castle.talos_render(None).await.unwrap();
    for c in &rendered.configs {
        let docs = c.config.expose_documents().unwrap();
        let vips = docs
            .iter()
            .filter(|d| d["kind"] == "Layer2VIPConfig" && d["name"] == "192.168.1.210")
            .count();
        assert_eq!(vips, usize::from(c.role == "controlplane"), "{}", c.node);
    }
    let summary = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    let snap = castle.lab().unwrap().talos.snapshot();
    let bootstrapped: Vec<&String> = snap["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n["bootstrapped"] == true)
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(
        bootstrapped,
        ["192.168.1.211"],
        "bootstrap exactly once, on the first"
    );
}

/// `destroy --wipe` deletes the bundle's KV metadata, and a bundle key left
/// soft-deleted (its versions kept, as KV v2 does) is written over at its current
/// version instead of a `cas: 0` that could never succeed.
#[tokio::test(start_paused = true)]
async fn destroy_wipe_then_create_works_and_a_soft_deleted_bundle_is_replaced() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let first = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        first.error.is_none(),
        "{:?}",
        first.error.map(|e| e.to_string())
    );
    let wiped = castle.destroy(RunOptions::default(), true).await.unwrap();
    assert!(
        wiped.error.is_none(),
        "{:?}",
        wiped.error.map(|e| e.to_string())
    );
    let vault = castle.lab().unwrap().vault.clone();
    let meta = castle_vault::VaultApi::read(&vault, "secret/metadata/castle/lab/talos-secrets")
        .await
        .unwrap();
    assert!(
        meta.is_none(),
        "wipe removed the bundle's metadata: {meta:?}"
    );
    let second = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        second.error.is_none(),
        "{:?}",
        second.error.map(|e| e.to_string())
    );

    // A soft delete by hand (`vault kv delete`) keeps the metadata.
    castle_vault::VaultApi::delete(&vault, "secret/data/castle/lab/talos-secrets")
        .await
        .unwrap();
    let destroyed = castle.destroy(RunOptions::default(), false).await.unwrap();
    assert!(destroyed.error.is_none());
    let third = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        third.error.is_none(),
        "{:?}",
        third.error.map(|e| e.to_string())
    );
    let meta = castle_vault::VaultApi::read(&vault, "secret/metadata/castle/lab/talos-secrets")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        meta["current_version"], 2,
        "written over the deleted version: {meta}"
    );
}
