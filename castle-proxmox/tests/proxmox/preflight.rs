//! `ops::preflight` against the strict mock: a healthy world passes every check
//! and changes nothing; each failure the lab can inject is named with its fix;
//! and what the preflight predicts is what the write calls then do.

use castle_probe::{Finding, Status};
use castle_proxmox::ops::{Fence, PlannedVm, Preflight, preflight};
use castle_proxmox::{CloneRequest, MockProxmox, ProxmoxApi, ServerProfile, VmConfig, wait_task};
use secrecy::SecretString;

const TOKEN_ID: &str = "castle@pve!rebirth";
const T: std::time::Duration = std::time::Duration::from_secs(600);

fn world() -> MockProxmox {
    let m = MockProxmox::new();
    m.add_template(9000, "talos-v1.12-golden", 10).unwrap();
    m
}

fn planned() -> Preflight {
    Preflight {
        token_id: TOKEN_ID.into(),
        node: "pve".into(),
        target: None,
        template: 9000,
        storage: None,
        bridge: "vmbr0".into(),
        vlan: None,
        pool: None,
        full_clone: false,
        vms: [
            (421, "lab-cp-1", 40),
            (422, "lab-worker-1", 60),
            (423, "lab-worker-2", 60),
        ]
        .into_iter()
        .map(|(vmid, name, disk_gib)| PlannedVm {
            vmid,
            name: name.into(),
            disk_gib,
        })
        .collect(),
        fence: Fence::new("castle", 420..=429).with_identity("castle-lab"),
    }
}

fn linked(newid: u32, name: &str) -> CloneRequest {
    CloneRequest {
        newid,
        name: name.into(),
        ..CloneRequest::default()
    }
}

/// The finding whose check starts with `check`.
fn find<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check.starts_with(check))
        .unwrap_or_else(|| panic!("no `{check}` among {findings:#?}"))
}

fn failed(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .collect()
}

/// Runs the preflight and proves it changed nothing: the world's snapshot is the
/// same before and after, and no write operation was called.
async fn probe(m: &MockProxmox, p: &Preflight) -> Vec<Finding> {
    const WRITES: [&str; 7] = [
        "clone_vm",
        "configure",
        "resize_disk",
        "start",
        "shutdown",
        "stop",
        "delete_vm",
    ];
    let before = m.snapshot();
    let writes_before = WRITES.map(|op| m.calls(op));
    let findings = preflight(m, p).await;
    assert_eq!(m.snapshot(), before, "the preflight changed the world");
    assert_eq!(
        WRITES.map(|op| m.calls(op)),
        writes_before,
        "the preflight called a write ({WRITES:?})"
    );
    for f in &findings {
        assert_eq!(
            f.fix.is_some(),
            f.status != Status::Pass,
            "every warning or failure, and only those, carries a fix: {f}"
        );
    }
    findings
}

#[tokio::test]
async fn a_healthy_world_passes_every_check_and_changes_nothing() {
    let m = world();
    let findings = probe(&m, &planned()).await;
    assert!(
        findings.iter().all(|f| f.status == Status::Pass),
        "{findings:#?}"
    );
    for check in [
        "reachable",
        "TLS trusted",
        "token valid",
        "API version",
        "node pve online",
        "template 9000",
        "template 9000 boot disk",
        "privileges on /vms/9000 (template)",
        "privileges on /vms/421 (lab-cp-1)",
        "privileges on /storage/local-lvm",
        "privileges on /sdn/zones/localnetwork/vmbr0",
        "vmid 421",
        "vmid 423",
        "storage local-lvm",
    ] {
        find(&findings, check);
    }
    assert!(
        find(&findings, "template 9000 boot disk")
            .detail
            .contains("scsi0 (10 GiB)")
    );
    let storage = &find(&findings, "storage local-lvm").detail;
    assert!(
        storage.contains("502 GiB free of 512 GiB") && storage.contains("3 GiB"),
        "linked clones take 1 GiB per disk up front: {storage}"
    );
}

#[tokio::test]
async fn a_wrong_token_stops_the_preflight_at_401() {
    let m = world();
    m.set_api_token(TOKEN_ID, &SecretString::from("the-real-one"));
    let caller = m.with_presented_token(TOKEN_ID, &SecretString::from("a-stale-one"));
    let findings = preflight(&caller, &planned()).await;
    assert_eq!(findings.len(), 2, "{findings:#?}");
    let token = find(&findings, "token valid");
    assert_eq!(token.status, Status::Fail);
    assert!(
        token
            .fix
            .as_deref()
            .unwrap()
            .contains("pveum user token list castle@pve"),
        "{token}"
    );
}

/// qemu-server `clone_vm` (`src/PVE/API2/Qemu.pm` e6352be6): VM.Clone on the
/// template. The preflight names the privilege and the role to grant, and the
/// clone it predicts to fail does fail with the server's message.
#[tokio::test]
async fn a_revoked_privilege_is_named_with_its_grant_and_the_clone_agrees() {
    let m = world();
    m.revoke_privilege("/vms/9000", "VM.Clone");
    let findings = probe(&m, &planned()).await;
    let fails = failed(&findings);
    assert_eq!(fails.len(), 1, "{findings:#?}");
    let f = fails[0];
    assert_eq!(f.check, "privileges on /vms/9000 (template)");
    assert!(f.detail.contains("VM.Clone (clone the template)"), "{f}");
    assert_eq!(
        f.fix.as_deref().unwrap(),
        "pveum acl modify /vms/9000 --roles PVETemplateUser --users castle@pve --tokens \
         'castle@pve!rebirth' (the user needs it too when the token has privilege separation)"
    );
    let e = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap_err();
    assert!(
        e.is_forbidden() && e.to_string().contains("(/vms/9000, VM.Clone)"),
        "{e}"
    );
    m.clear_revoked_privileges();
    assert!(failed(&probe(&m, &planned()).await).is_empty());
}

/// Inheritance: a privilege revoked on `/storage` is gone on every storage below;
/// `check_storage_access_clone` then refuses the clone, and `resize_vm` a resize.
#[tokio::test]
async fn privileges_revoked_on_a_parent_path_are_gone_below_it() {
    let m = world();
    let t = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap();
    wait_task(&m, &t, T).await.unwrap();
    m.revoke_privilege("/storage", "Datastore.AllocateSpace");
    m.revoke_privilege("/sdn/zones/localnetwork", "SDN.Use");
    let findings = probe(&m, &planned()).await;
    let checks: Vec<&str> = failed(&findings).iter().map(|f| f.check.as_str()).collect();
    assert_eq!(
        checks,
        [
            "privileges on /storage/local-lvm",
            "privileges on /sdn/zones/localnetwork/vmbr0"
        ],
        "{findings:#?}"
    );
    assert!(
        find(&findings, "privileges on /storage/local-lvm")
            .fix
            .as_deref()
            .unwrap()
            .contains("--roles PVEDatastoreUser"),
    );
    let e = m.resize_disk("pve", 421, "scsi0", 40).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("(/storage/local-lvm, Datastore.AllocateSpace)"),
        "{e}"
    );
    let e = m
        .configure(
            "pve",
            421,
            &VmConfig {
                net0: Some("virtio,bridge=vmbr0".into()),
                ..VmConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("(/sdn/zones/localnetwork/vmbr0, SDN.Use)"),
        "{e}"
    );
    let e = m
        .clone_vm("pve", 9000, &linked(422, "lab-worker-1"))
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e}");
}

/// qemu-server `check_vm_modify_config_perm`: each key its own privilege;
/// `ipconfigN` needs VM.Config.Cloudinit or VM.Config.Network.
#[tokio::test]
async fn configuring_checks_the_privilege_of_each_key() {
    let m = world();
    let t = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap();
    wait_task(&m, &t, T).await.unwrap();
    m.revoke_privilege("/vms/421", "VM.Config.Memory");
    m.revoke_privilege("/vms/421", "VM.Config.Cloudinit");
    let memory = VmConfig {
        memory_mib: Some(4096),
        ..VmConfig::default()
    };
    let e = m.configure("pve", 421, &memory).await.unwrap_err();
    assert!(
        e.to_string().contains("(/vms/421, VM.Config.Memory)"),
        "{e}"
    );
    let ip = VmConfig {
        ipconfig0: Some("ip=10.0.0.5/24".into()),
        cores: Some(2),
        ..VmConfig::default()
    };
    m.configure("pve", 421, &ip).await.unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "privileges on /vms/421");
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.detail.contains("VM.Config.Memory (set memory)") && !f.detail.contains("Cloudinit"),
        "{f}"
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("pveum acl modify /vms/421 --roles PVEVMAdmin")
    );
}

/// pve-access-control `RPCEnvironment.pm` (5ccd07d9) `compile_acl_path`: a VM in
/// a pool gets the pool's roles, never propagated; a VMID that does not exist yet
/// is in no pool, so a new clone's rights come from `/pool/NAME` (qemu-server
/// `clone_vm`: VM.Allocate on `/pool/{pool}`). With `pool` set the preflight asks
/// for both paths; without it, it names each VMID.
#[tokio::test]
async fn a_pool_scoped_token_is_understood() {
    let m = world().with_pool_scoped_token("castle");
    m.add_to_pool(9000, "castle").unwrap();
    let on_template = m.permissions("/vms/9000").await.unwrap();
    assert_eq!(
        on_template.get("VM.Clone"),
        Some(&false),
        "pool roles never propagate"
    );
    let on_pool = m.permissions("/pool/castle").await.unwrap();
    assert_eq!(on_pool.get("VM.Allocate"), Some(&true));
    assert!(m.permissions("/vms/421").await.unwrap().is_empty());
    assert_eq!(
        m.permissions("/storage/local-lvm")
            .await
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["Datastore.AllocateSpace", "Datastore.Audit"]
    );

    let mut p = planned();
    p.pool = Some("castle".into());
    let findings = probe(&m, &p).await;
    assert!(failed(&findings).is_empty(), "{findings:#?}");

    // The config forgot `proxmox.pool`: the new VMIDs hold nothing, and a clone
    // without the pool is refused the same way.
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "privileges on /vms/421");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("VM.Allocate"), "{f}");
    let e = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e}");

    // Revoked on the pool: gone on its members too.
    m.revoke_privilege("/pool/castle", "VM.PowerMgmt");
    assert!(
        !m.permissions("/vms/9000")
            .await
            .unwrap()
            .contains_key("VM.PowerMgmt")
    );
    let findings = probe(&m, &p).await;
    let f = find(&findings, "privileges on /vms/421");
    assert!(
        f.detail.contains("VM.PowerMgmt") && f.fix.as_deref().unwrap().contains("/pool/castle"),
        "{f}"
    );
}

#[tokio::test]
async fn a_missing_template_or_a_plain_vm_fails() {
    let m = world();
    m.remove_vm(9000).unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "template 9000");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("no VM 9000 on node pve"), "{f}");
    assert!(
        f.fix.as_deref().unwrap().contains("qm template 9000"),
        "{f}"
    );

    let m = world();
    m.set_template_flag(9000, false).unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "template 9000");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("plain VM"), "{f}");
    let e = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Linked clone feature"), "{e}");
    let mut full = planned();
    full.full_clone = true;
    let findings = probe(&m, &full).await;
    assert_eq!(find(&findings, "template 9000").status, Status::Warn);
}

/// qemu-server `Drive::bootdisk_size`: the first disk of `boot: order=...`, or the
/// legacy `bootdisk` key.
#[tokio::test]
async fn a_template_without_a_boot_disk_fails() {
    let m = MockProxmox::new();
    m.add_template_with_disks(9000, "talos", &[("scsi0", 10)], Some("order=ide2;net0"))
        .unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "template 9000 boot disk");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("order=ide2;net0"), "{f}");
    assert!(f.fix.as_deref().unwrap().contains("--boot order=scsi0"));
}

#[tokio::test]
async fn an_offline_node_fails_and_its_calls_fail_too() {
    let m = world();
    m.set_node_online("pve", false).unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "node pve online");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("offline"), "{f}");
    let e = m.vm_status("pve", 9000).await.unwrap_err();
    assert_eq!(e.status(), Some(595), "{e}");
    assert!(e.is_transient());

    let mut elsewhere = planned();
    elsewhere.node = "pve7".into();
    let m = world();
    let f = probe(&m, &elsewhere).await;
    let f = find(&f, "node pve7 online");
    assert!(f.detail.contains("no node `pve7`") && f.fix.as_deref().unwrap().contains("pve"));
}

#[tokio::test]
async fn each_vmid_is_free_castles_or_named_as_someone_elses() {
    let m = world();
    let t = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap();
    wait_task(&m, &t, T).await.unwrap();
    m.configure(
        "pve",
        421,
        &VmConfig {
            tags: Some(vec!["castle".into(), "castle-lab".into()]),
            ..VmConfig::default()
        },
    )
    .await
    .unwrap();
    m.add_vm(422, "grafana", &["monitoring"], true).unwrap();
    m.add_vm(423, "lab-worker-2", &["castle", "castle-other"], false)
        .unwrap();
    let mut p = planned();
    p.vms.push(PlannedVm {
        vmid: 430,
        name: "lab-worker-3".into(),
        disk_gib: 20,
    });
    let findings = probe(&m, &p).await;
    assert_eq!(find(&findings, "vmid 421").status, Status::Pass);
    assert!(
        find(&findings, "vmid 421")
            .detail
            .contains("already Castle's")
    );
    let f = find(&findings, "vmid 422");
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.detail.contains("`grafana` on pve (tags: monitoring)")
            && f.detail.contains("does not carry the tag `castle`"),
        "{f}"
    );
    let f = find(&findings, "vmid 423");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("belongs to another cluster"), "{f}");
    let f = find(&findings, "vmid 430");
    assert!(
        f.detail.contains("outside proxmox.vmid_range 420-429"),
        "{f}"
    );
}

/// A VMID held by a guest the token may not see: `GET /cluster/nextid?vmid=N`
/// (pve-manager `Cluster.pm`, `user => 'all'`) still tells it is taken.
#[tokio::test]
async fn a_vmid_hidden_from_a_pool_scoped_token_is_still_found_taken() {
    let m = world().with_pool_scoped_token("castle");
    m.add_to_pool(9000, "castle").unwrap();
    m.add_vm(422, "backup-box", &[], false).unwrap();
    let mut p = planned();
    p.pool = Some("castle".into());
    let findings = probe(&m, &p).await;
    let f = find(&findings, "vmid 422");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("may not see"), "{f}");
}

#[tokio::test]
async fn storage_without_room_fails_and_says_what_it_assumed() {
    let m = world();
    m.set_storage_free_gib("local-lvm", 2).unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "storage local-lvm");
    assert_eq!(f.status, Status::Fail);
    assert!(
        f.detail.contains("2 GiB free") && f.detail.contains("1 GiB per disk"),
        "{f}"
    );
    m.clear_storage_fill("local-lvm").unwrap();
    let findings = probe(&m, &planned()).await;
    assert_eq!(find(&findings, "storage local-lvm").status, Status::Pass);

    // Full clones take their whole (grown) disks: 40 + 60 + 60 GiB.
    let m = world();
    m.set_storage_free_gib("local-lvm", 100).unwrap();
    let mut full = planned();
    full.full_clone = true;
    full.storage = Some("local-lvm".into());
    let f = probe(&m, &full).await;
    let f = find(&f, "storage local-lvm");
    assert_eq!(f.status, Status::Fail);
    assert!(f.detail.contains("needs 160 GiB"), "{f}");

    // Linked clones fit now but not once their disks fill: a warning.
    let m = world();
    m.set_storage_free_gib("local-lvm", 100).unwrap();
    let f = probe(&m, &planned()).await;
    assert_eq!(find(&f, "storage local-lvm").status, Status::Warn);
}

/// pve-storage `API2/Storage/Status.pm` `read_status`: an unknown id is a 400 on
/// `storage`; `storage_info` reports a disabled storage with zero sizes.
#[tokio::test]
async fn an_unknown_disabled_or_wrong_storage_fails() {
    let m = world();
    let mut full = planned();
    full.full_clone = true;
    full.storage = Some("fast".into());
    let findings = probe(&m, &full).await;
    let f = find(&findings, "storage fast");
    assert!(f.detail.contains("no storage `fast`"), "{f}");
    let e = m
        .clone_vm(
            "pve",
            9000,
            &CloneRequest {
                full: true,
                storage: Some("fast".into()),
                format: None,
                ..linked(421, "lab-cp-1")
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("storage 'fast' does not exist"),
        "{e}"
    );

    m.add_storage("fast", "dir", &["iso"], 100);
    let findings = probe(&m, &full).await;
    assert!(
        find(&findings, "storage fast")
            .detail
            .contains("does not hold VM disks")
    );

    m.set_storage_state("local-lvm", false, true).unwrap();
    let findings = probe(&m, &planned()).await;
    let f = find(&findings, "storage local-lvm");
    assert!(f.detail.contains("disabled"), "{f}");
}

/// The older profile models PVE 7.4: no SDN.Use checks (pve-guest-common
/// `check_vnet_access` came with PVE 8), errors in the reason phrase only.
#[tokio::test]
async fn an_older_server_passes_without_bridge_checks() {
    let m = world().with_profile(ServerProfile::Older);
    m.revoke_privilege("/sdn", "SDN.Use");
    let findings = probe(&m, &planned()).await;
    assert!(failed(&findings).is_empty(), "{findings:#?}");
    assert!(find(&findings, "API version").detail.contains("7.4"));
    assert!(!findings.iter().any(|f| f.check.contains("/sdn/")));
    let t = m
        .clone_vm("pve", 9000, &linked(421, "lab-cp-1"))
        .await
        .unwrap();
    wait_task(&m, &t, T).await.unwrap();
}

/// Nodes, storages and VMs are the world's: they survive a snapshot and restore
/// (the lab's state file). The token's privileges are not: like the pool scope,
/// the lab sets them on every opening.
#[tokio::test]
async fn world_knobs_persist_and_token_knobs_do_not() {
    let m = world();
    m.set_node_online("pve", false).unwrap();
    m.add_storage("fast", "zfspool", &["images"], 64);
    m.set_storage_free_gib("fast", 4).unwrap();
    m.revoke_privilege("/vms/9000", "VM.Clone");
    let saved = m.snapshot();
    let fresh = MockProxmox::new();
    fresh.restore(&saved).unwrap();
    assert_eq!(fresh.snapshot(), saved);
    let findings = preflight(&fresh, &planned()).await;
    assert_eq!(find(&findings, "node pve online").status, Status::Fail);
    assert_eq!(
        find(&findings, "privileges on /vms/9000").status,
        Status::Pass
    );
    fresh.set_node_online("pve", true).unwrap();
    let s = fresh.storage_status("pve", "fast").await.unwrap();
    assert_eq!(s.avail, Some(4 << 30));
    // A snapshot from before the probes existed restores with the default storages.
    let mut old = saved.clone();
    let world = old.as_object_mut().unwrap();
    world.remove("storages");
    world.remove("offline_nodes");
    fresh.restore(&old).unwrap();
    assert!(fresh.storage_status("pve", "local-lvm").await.is_ok());
    assert!(
        m.set_node_online("pve9", false)
            .unwrap_err()
            .to_string()
            .contains("pve9")
    );
}

/// `castle doctor` says whether create can link: pve-storage `volume_has_feature`
/// of the storage holding the template's disks (`LvmThinPlugin.pm`: clone of a
/// base volume; `LVMPlugin.pm`: none), and that `proxmox.storage` only serves full
/// clones (qemu-server `clone_vm`: "parameter 'storage' not allowed for linked
/// clones").
#[tokio::test]
async fn doctor_says_whether_linked_clones_are_possible() {
    let m = world();
    let findings = probe(&m, &planned()).await;
    let linked = find(&findings, "linked clones");
    assert_eq!(linked.status, Status::Pass);
    assert!(linked.detail.contains("local-lvm (lvmthin)"), "{linked}");

    let mut elsewhere = planned();
    elsewhere.storage = Some("fast".into());
    m.add_storage("fast", "lvmthin", &["images"], 512);
    let findings = probe(&m, &elsewhere).await;
    let linked = find(&findings, "linked clones");
    assert_eq!(linked.status, Status::Warn, "{linked}");
    assert!(
        linked.detail.contains("applies to full clones only"),
        "{linked}"
    );

    let on_lvm = MockProxmox::new();
    on_lvm.add_storage("vg0", "lvm", &["images"], 512);
    on_lvm
        .add_template_on(9000, "talos-v1.12-golden", 10, "vg0")
        .unwrap();
    let findings = probe(&on_lvm, &planned()).await;
    let linked = find(&findings, "linked clones");
    assert_eq!(linked.status, Status::Warn, "{linked}");
    assert!(
        linked.detail.contains("storage vg0 (lvm)") && linked.detail.contains("full clones"),
        "{linked}"
    );

    let mut full = planned();
    full.full_clone = true;
    let findings = probe(&m, &full).await;
    assert!(
        find(&findings, "linked clones")
            .detail
            .contains("proxmox.full_clone = true")
    );
}
