//! `castle plan`, live: what each system would get, asked read-only, on a fresh
//! lab, after a create, and after one setting changed.

use castle_core::castle::{Castle, Plan};
use castle_tests::{created, lab_copy, paused};

fn changes(plan: &Plan) -> Vec<(String, String, String, Vec<String>)> {
    plan.steps
        .iter()
        .flat_map(|s| &s.changes)
        .map(|c| {
            (
                c.system.clone(),
                c.action.clone(),
                c.target.clone(),
                c.fields.clone(),
            )
        })
        .collect()
}

fn running(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter(|s| s.action == "run")
        .map(|s| s.id.as_str())
        .collect()
}

/// The lab's world as JSON, every simulator: a plan must leave it as it was. The
/// simulated tailnet's clock is not state a request changes: time passes.
fn world(castle: &Castle) -> serde_json::Value {
    let lab = castle.lab().unwrap();
    let mut tailnet = lab.tailscale.snapshot();
    tailnet.as_object_mut().unwrap().remove("clock");
    serde_json::json!([
        lab.proxmox.snapshot(),
        lab.talos.snapshot(),
        lab.vault.snapshot(),
        tailnet,
        lab.cluster.snapshot(),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_fresh_lab_plans_the_vms_and_the_vault_changes_and_writes_nothing() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    let before = world(&castle);
    let plan = castle.plan().await.unwrap();
    assert!(world(&castle) == before, "planning changed the lab's world");
    let all = changes(&plan);
    let clones: Vec<&str> = all
        .iter()
        .filter(|c| c.0 == "proxmox" && c.1 == "clone")
        .map(|c| c.2.as_str())
        .collect();
    assert_eq!(
        clones,
        [
            "vm 421 lab-cp-1",
            "vm 422 lab-worker-1",
            "vm 423 lab-worker-2"
        ]
    );
    assert!(
        all.iter().any(|c| c.0 == "vault"
            && c.1 == "create"
            && c.2 == "jwt role auth/jwt/role/external-secrets"),
        "{all:#?}"
    );
    assert!(all.iter().any(|c| c.0 == "tailscale" && c.1 == "mint"));
    // Issue 17: each chart's HelmRelease by name, with its chart and source; Flux's
    // own objects by kind, counted from its pinned release file (no cluster yet).
    let metallb = all
        .iter()
        .find(|c| c.0 == "kubernetes" && c.2 == "HelmRelease metallb-system/metallb")
        .expect("metallb planned");
    assert!(
        metallb.3.contains(&"chart: metallb 0.15.2".to_string())
            && metallb.3.contains(
                &"source: HelmRepository metallb-system/metallb (https://metallb.github.io/metallb)"
                    .to_string()
            ),
        "{metallb:?}"
    );
    for release in [
        "HelmRelease external-secrets/external-secrets",
        "HelmRelease longhorn-system/longhorn",
    ] {
        assert!(all.iter().any(|c| c.2 == release), "{release}: {all:#?}");
    }
    let flux = all
        .iter()
        .find(|c| c.0 == "kubernetes" && c.2.starts_with("flux:"))
        .expect("flux planned");
    assert!(
        flux.3.contains(&"6 CustomResourceDefinition".to_string()),
        "{flux:?}"
    );
    assert!(
        plan.steps.iter().all(|s| s.warnings.is_empty()),
        "{plan:#?}"
    );
    // The database password reaches the plan only as "(sensitive)".
    let text = plan.render();
    assert!(text.contains("password: (unset) -> (sensitive)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn after_create_nothing_changes_and_one_setting_shows_exactly_its_diff() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    let plan = castle.plan().await.unwrap();
    assert_eq!(running(&plan), Vec::<&str>::new(), "{}", plan.render());
    assert_eq!(changes(&plan), vec![]);
    assert!(plan.render().contains("no changes"));
    drop(castle);

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("memory_mib = 8192", "memory_mib = 12288", 1),
    )
    .unwrap();
    let castle = Castle::open(&config).unwrap();
    let plan = castle.plan().await.unwrap();
    assert_eq!(
        changes(&plan),
        vec![(
            "proxmox".to_string(),
            "update".to_string(),
            "vm 421 lab-cp-1".to_string(),
            vec!["memory: 8192 -> 12288".to_string()]
        )]
    );
    // Only cp-1's unit runs again; the secrets step too, since it needs them.
    assert_eq!(running(&plan), ["secrets", "platform/cp-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_system_that_cannot_be_asked_is_a_warning_in_the_plan() {
    let (_dir, config) =
        lab_copy(|t| paused(t).replace("[lab]\n", "[lab]\ninject = [\"vault-sealed\"]\n"));
    let castle = Castle::open(&config).unwrap();
    let plan = castle.plan().await.unwrap();
    let vault = plan.steps.iter().find(|s| s.id == "vault-jwt").unwrap();
    assert!(vault.changes.is_empty());
    assert!(
        vault
            .warnings
            .iter()
            .any(|w| w.starts_with("vault: not asked") && w.contains("503")),
        "{:?}",
        vault.warnings
    );
    // The other systems are still planned.
    assert_eq!(changes(&plan).iter().filter(|c| c.1 == "clone").count(), 3);
}

/// After a create, the nodes answer over mutual TLS: a setting that reaches the
/// machine configs plans an apply to each configured node, nothing to Proxmox.
#[tokio::test(start_paused = true)]
async fn configured_nodes_are_planned_as_applies_over_mutual_tls() {
    let (_dir, config) = lab_copy(paused);
    let castle = Castle::open(&config).unwrap();
    created(&castle).await;
    drop(castle);
    let text = std::fs::read_to_string(&config).unwrap();
    let edited = text.replacen("nameservers = [", "nameservers = [\"9.9.9.9\", ", 1);
    assert_ne!(edited, text);
    std::fs::write(&config, edited).unwrap();
    let castle = Castle::open(&config).unwrap();
    let plan = castle.plan().await.unwrap();
    let talos: Vec<(String, String)> = changes(&plan)
        .into_iter()
        .filter(|c| c.0 == "talos")
        .map(|c| (c.1, c.2))
        .collect();
    assert_eq!(
        talos,
        [
            ("apply", "node cp-1 (192.168.1.211)"),
            ("apply", "node worker-1 (192.168.1.212)"),
            ("apply", "node worker-2 (192.168.1.213)"),
        ]
        .map(|(a, t)| (a.to_string(), t.to_string()))
    );
    assert!(!changes(&plan).iter().any(|c| c.0 == "proxmox"));
}
