//! MockProxmox refuses what a real Proxmox VE refuses, keeps state, and models time.

use std::time::Duration;

use castle_proxmox::{
    CloneRequest, Error, Faults, Latency, MockProxmox, PowerState, ProxmoxApi, TaskStatus,
    VmConfig, wait_task,
};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(600);

fn linked(newid: u32, name: &str) -> CloneRequest {
    CloneRequest {
        newid,
        name: name.into(),
        full: false,
        storage: None,
        description: None,
        pool: None,
        target: None,
    }
}

fn world() -> MockProxmox {
    let m = MockProxmox::new();
    m.add_template(9000, "talos-template", 8).unwrap();
    m
}

async fn clone_ready(m: &MockProxmox, vmid: u32, name: &str) {
    let t = m.clone_vm("pve", 9000, &linked(vmid, name)).await.unwrap();
    wait_task(m, &t, T).await.unwrap();
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[tokio::test(start_paused = true)]
async fn a_clone_is_locked_until_its_task_ends() {
    let m = world().with_latency(Latency::lab());
    let task = m.clone_vm("pve", 9000, &linked(421, "cp-1")).await.unwrap();
    let vm = m.vm_status("pve", 421).await.unwrap().unwrap();
    assert_eq!(vm.lock.as_deref(), Some("clone"));
    let e = m.start("pve", 421).await.unwrap_err();
    assert!(message(&e).contains("is locked (clone)"), "{e}");
    assert!(e.is_transient(), "a lock clears by itself");
    let e = m
        .configure(
            "pve",
            421,
            &VmConfig {
                cores: Some(2),
                ..VmConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(message(&e).contains("locked"), "{e}");
    let started = Instant::now();
    wait_task(&m, &task, T).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(11) && took <= Duration::from_secs(14),
        "{took:?}"
    );
    assert_eq!(m.vm_status("pve", 421).await.unwrap().unwrap().lock, None);
}

/// qemu-server `src/PVE/API2/Qemu.pm` (e6352be6) `clone_vm`, `$load_and_check`:
/// "unable to create VM $newid: config file already exists".
#[tokio::test]
async fn a_taken_id_cannot_be_cloned_to() {
    let m = world();
    clone_ready(&m, 421, "cp-1").await;
    let e = m
        .clone_vm("pve", 9000, &linked(421, "cp-2"))
        .await
        .unwrap_err();
    assert!(
        message(&e).contains("unable to create VM 421: config file already exists"),
        "{e}"
    );
    assert!(!e.is_transient());
}

/// qemu-server `src/PVE/API2/Qemu.pm` (e6352be6) `clone_vm`: the schema refuses a
/// bad name (400); "parameter 'storage' not allowed for linked clones" is a die
/// in the handler (500, permanent).
#[tokio::test]
async fn clone_parameters_are_validated() {
    let m = world();
    let e = m
        .clone_vm("pve", 9000, &linked(421, "not a dns name"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let mut storage_on_linked = linked(421, "cp-1");
    storage_on_linked.storage = Some("local-lvm".into());
    let e = m
        .clone_vm("pve", 9000, &storage_on_linked)
        .await
        .unwrap_err();
    assert!(
        message(&e).contains("parameter 'storage' not allowed for linked clones"),
        "{e}"
    );
    assert!(!e.is_transient());
    let e = m
        .clone_vm("pve", 9001, &linked(421, "cp-1"))
        .await
        .unwrap_err();
    assert!(message(&e).contains("does not exist"), "{e}");
    let e = m
        .clone_vm("pve2", 9000, &linked(421, "cp-1"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "an unknown node stays unknown: {e}");
    assert!(m.list_vms().await.unwrap().iter().all(|vm| vm.vmid == 9000));
}

#[tokio::test]
async fn a_template_cannot_be_started_and_a_running_vm_cannot_be_deleted() {
    let m = world();
    let e = m.start("pve", 9000).await.unwrap_err();
    assert!(
        message(&e).contains("you can't start a vm if it's a template"),
        "{e}"
    );
    assert!(!e.is_transient());

    clone_ready(&m, 421, "cp-1").await;
    let t = m.start("pve", 421).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    let e = m.delete_vm("pve", 421).await.unwrap_err();
    assert!(
        message(&e).contains("VM 421 is running - destroy failed"),
        "{e}"
    );
    assert!(!e.is_transient());
    let e = m.start("pve", 421).await.unwrap_err();
    assert!(message(&e).contains("already running"), "{e}");
}

#[tokio::test]
async fn a_template_with_linked_clones_cannot_be_deleted() {
    let m = world();
    clone_ready(&m, 421, "cp-1").await;
    let e = m.delete_vm("pve", 9000).await.unwrap_err();
    assert!(message(&e).contains("still in use by linked clone"), "{e}");
    let t = m.delete_vm("pve", 421).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    assert!(m.vm_status("pve", 421).await.unwrap().is_none());
    let t = m.delete_vm("pve", 9000).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    assert!(m.list_vms().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_config_keys_and_bad_values_are_refused_whole() {
    let m = world();
    clone_ready(&m, 421, "cp-1").await;
    let before = m.vm_config("pve", 421).await.unwrap();
    let config = VmConfig {
        cores: Some(4),
        extra: [("colour".to_string(), "red".to_string())].into(),
        ..VmConfig::default()
    };
    let e = m.configure("pve", 421, &config).await.unwrap_err();
    match &e {
        Error::Api {
            status: 400,
            params,
            ..
        } => {
            assert!(
                params["colour"].contains("property is not defined in schema"),
                "{e}"
            )
        }
        other => panic!("expected a 400, got {other}"),
    }
    for bad in [
        VmConfig {
            memory_mib: Some(8),
            ..VmConfig::default()
        },
        VmConfig {
            cores: Some(0),
            ..VmConfig::default()
        },
        VmConfig {
            net0: Some("virtio,bridge=vmbr0,tag=5000".into()),
            ..VmConfig::default()
        },
        VmConfig {
            ipconfig0: Some("ip=10.0.0.5,gw=10.0.0.1".into()),
            ..VmConfig::default()
        },
        VmConfig {
            tags: Some(vec!["-bad".into()]),
            ..VmConfig::default()
        },
    ] {
        let e = m.configure("pve", 421, &bad).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{bad:?}: {e}");
        assert!(!e.is_transient());
    }
    assert_eq!(
        m.vm_config("pve", 421).await.unwrap(),
        before,
        "nothing was applied"
    );
    let good = VmConfig {
        extra: [("agent".to_string(), "0".to_string())].into(),
        net0: Some("virtio,bridge=vmbr1,tag=20".into()),
        ..VmConfig::default()
    };
    m.configure("pve", 421, &good).await.unwrap();
    let after = m.vm_config("pve", 421).await.unwrap();
    assert_eq!(after["agent"], "0");
    let e = m
        .configure(
            "pve",
            421,
            &VmConfig {
                extra: [("delete".to_string(), "colour".to_string())].into(),
                ..VmConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let rename = VmConfig {
        extra: [
            ("delete".to_string(), "agent".to_string()),
            ("name".to_string(), "cp-9".to_string()),
        ]
        .into(),
        ..VmConfig::default()
    };
    m.configure("pve", 421, &rename).await.unwrap();
    let after = m.vm_config("pve", 421).await.unwrap();
    assert!(!after.contains_key("agent"));
    assert_eq!(m.vm_status("pve", 421).await.unwrap().unwrap().name, "cp-9");
    assert!(
        after["net0"].starts_with("virtio=BC:24:11:"),
        "a new NIC gets a MAC: {}",
        after["net0"]
    );
}

#[tokio::test]
async fn disks_grow_but_never_shrink() {
    let m = world();
    clone_ready(&m, 421, "cp-1").await;
    let t = m
        .resize_disk("pve", 421, "scsi0", 32)
        .await
        .unwrap()
        .unwrap();
    wait_task(&m, &t, T).await.unwrap();
    assert_eq!(
        m.vm_status("pve", 421).await.unwrap().unwrap().maxdisk,
        32 << 30
    );
    let e = m.resize_disk("pve", 421, "scsi0", 16).await.unwrap_err();
    assert!(
        message(&e).contains("shrinking disks is not supported"),
        "{e}"
    );
    assert!(!e.is_transient());
    // qemu-server `src/PVE/API2/Qemu.pm` (e6352be6) `resize_vm`: "disk '$disk'
    // does not exist" is a die in the handler: a 500 stating a fact.
    let e = m.resize_disk("pve", 421, "scsi1", 64).await.unwrap_err();
    assert!(message(&e).contains("disk 'scsi1' does not exist"), "{e}");
    assert!(!e.is_transient());
}

#[tokio::test(start_paused = true)]
async fn too_many_clones_from_one_template_hit_the_storage_lock() {
    let m = world().with_latency(Latency::lab()).with_clone_capacity(2);
    let a = m.clone_vm("pve", 9000, &linked(421, "a")).await.unwrap();
    m.clone_vm("pve", 9000, &linked(422, "b")).await.unwrap();
    let e = m
        .clone_vm("pve", 9000, &linked(423, "c"))
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "proxmox POST /nodes/pve/qemu/9000/clone: 500 can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    );
    assert!(e.is_transient());
    assert!(e.retry_after().is_some());
    assert!(
        m.vm_status("pve", 423).await.unwrap().is_none(),
        "nothing was created"
    );
    wait_task(&m, &a, T).await.unwrap();
    m.clone_vm("pve", 9000, &linked(423, "c")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_guest_fails_shutdown_at_the_timeout_and_stop_works() {
    let m = world().with_latency(Latency::lab());
    clone_ready(&m, 421, "cp-1").await;
    let t = m.start("pve", 421).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    m.set_ignores_shutdown(421, true).unwrap();
    let started = Instant::now();
    let t = m
        .shutdown("pve", 421, Duration::from_secs(30))
        .await
        .unwrap();
    let e = wait_task(&m, &t, T).await.unwrap_err();
    assert!(
        message(&e).contains("VM quit/powerdown failed - got timeout"),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    let t = m.stop("pve", 421).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    assert_eq!(
        m.vm_status("pve", 421).await.unwrap().unwrap().status,
        PowerState::Stopped
    );
}

#[tokio::test]
async fn transient_faults_are_seeded_and_change_nothing() {
    let always = world().with_faults(Faults::transient(7, 1.0));
    let e = always
        .clone_vm("pve", 9000, &linked(421, "cp-1"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert!(e.is_transient());
    always.clear_faults();
    assert!(always.vm_status("pve", 421).await.unwrap().is_none());

    let pattern = |m: MockProxmox| async move {
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            outcomes.push(m.list_vms().await.is_ok());
        }
        outcomes
    };
    let a = pattern(world().with_faults(Faults::transient(42, 0.3))).await;
    let b = pattern(world().with_faults(Faults::transient(42, 0.3))).await;
    let c = pattern(world().with_faults(Faults::transient(43, 0.3))).await;
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((4..=20).contains(&failures), "{failures} of 40 at rate 0.3");
}

#[tokio::test]
async fn permanent_faults_hit_one_named_operation() {
    let m = world();
    m.fail_permanently("clone_vm", "storage 'local-lvm' is full")
        .unwrap();
    let e = m
        .clone_vm("pve", 9000, &linked(421, "cp-1"))
        .await
        .unwrap_err();
    assert!(!e.is_transient());
    assert!(message(&e).contains("storage 'local-lvm' is full"));
    assert!(m.list_vms().await.is_ok(), "other operations still work");
    assert!(matches!(
        m.fail_permanently("clone", "x"),
        Err(Error::Setup(_))
    ));
    m.clear_faults();
    m.clone_vm("pve", 9000, &linked(421, "cp-1")).await.unwrap();
    assert_eq!(m.calls("clone_vm"), 2);
}

#[tokio::test(start_paused = true)]
async fn snapshot_and_restore_resume_a_running_clone() {
    let m = world().with_latency(Latency::lab());
    let task = m.clone_vm("pve", 9000, &linked(421, "cp-1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let snapshot = m.snapshot();
    let text = serde_json::to_string(&snapshot).unwrap();

    let restored = MockProxmox::new().with_latency(Latency::lab());
    restored
        .restore(&serde_json::from_str(&text).unwrap())
        .unwrap();
    assert_eq!(
        restored
            .vm_status("pve", 421)
            .await
            .unwrap()
            .unwrap()
            .lock
            .as_deref(),
        Some("clone")
    );
    assert_eq!(
        restored.task_status(&task).await.unwrap(),
        TaskStatus::Running
    );
    let started = Instant::now();
    wait_task(&restored, &task, T).await.unwrap();
    let rest = started.elapsed();
    assert!(
        rest >= Duration::from_secs(7) && rest <= Duration::from_secs(10),
        "{rest:?}"
    );
    assert_eq!(
        restored.vm_status("pve", 421).await.unwrap().unwrap().lock,
        None
    );
    assert!(restored.restore(&serde_json::json!({"vms": 1})).is_err());
}

#[tokio::test]
async fn next_id_skips_taken_ids() {
    let m = MockProxmox::new();
    m.add_vm(100, "a", &[], false).unwrap();
    m.add_vm(101, "b", &[], false).unwrap();
    assert_eq!(m.next_id().await.unwrap(), 102);
    assert!(m.add_vm(100, "again", &[], false).is_err());
}

/// pve-http-server `src/PVE/APIServer/AnyEvent.pm` `response` (the reason phrase is
/// the message's first line) and `Formatter/Standard.pm` before 9a2112e (no
/// `message` in a json error body): the older profile reproduces what such a
/// server lets a client read, through the client's own decoder.
#[tokio::test]
async fn the_older_server_profile_gives_only_the_first_line() {
    let m = world().with_profile(castle_proxmox::ServerProfile::Older);
    assert!(
        m.vm_status("pve", 421).await.unwrap().is_none(),
        "'does not exist' still reads as no VM"
    );
    m.fail_permanently("start", "first line\nsecond line")
        .unwrap();
    clone_ready(&m, 421, "cp-1").await;
    let e = m.start("pve", 421).await.unwrap_err();
    assert!(
        e.to_string().contains("first line") && !e.to_string().contains("second line"),
        "{e}"
    );
    let current = world();
    current
        .fail_permanently("start", "first line\nsecond line")
        .unwrap();
    clone_ready(&current, 421, "cp-1").await;
    let e = current.start("pve", 421).await.unwrap_err();
    assert!(e.to_string().contains("second line"), "{e}");
}

/// pve-manager `PVE/API2Tools.pm` (14a22df3) `extract_vm_stats`: a VM without
/// statistics is `status: unknown` with no name; `PVE/API2/Cluster.pm` adds its
/// config properties (tags, lock) regardless.
#[tokio::test(start_paused = true)]
async fn a_new_clone_is_unknown_and_nameless_in_the_listing() {
    let m = world().with_latency(Latency::lab());
    m.clone_vm("pve", 9000, &linked(421, "cp-1")).await.unwrap();
    let listed = m.list_vms().await.unwrap();
    let vm = listed.iter().find(|v| v.vmid == 421).unwrap();
    assert_eq!(vm.status, PowerState::Unknown);
    assert_eq!((vm.name.as_str(), vm.lock.as_deref()), ("", Some("clone")));
    let config = m.vm_config("pve", 421).await.unwrap();
    assert_eq!(
        config.into_iter().collect::<Vec<_>>(),
        [("lock".to_string(), "clone".to_string())]
    );
    // After the first disk: named, still locked; after the task: unlocked.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let vm = m.vm_status("pve", 421).await.unwrap().unwrap();
    assert_eq!(
        (vm.name.as_str(), vm.lock.as_deref()),
        ("cp-1", Some("clone"))
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let vm = m.vm_status("pve", 421).await.unwrap().unwrap();
    assert_eq!((vm.status, vm.lock), (PowerState::Stopped, None));
}

/// The clone's permission check in qemu-server `src/PVE/API2/Qemu.pm` (e6352be6):
/// VM.Clone on /vms/{vmid}, VM.Allocate on /vms/{newid} or on /pool/{pool};
/// `vm_status` needs VM.Audit on /vms/{vmid}, which a pool-scoped token holds only
/// for the pool's members, so a VMID that does not exist yet answers 403; pve-manager
/// `PVE/API2/Cluster.pm` `nextid` (`user => 'all'`) still answers for it.
#[tokio::test]
async fn a_pool_scoped_token_sees_only_its_pool() {
    let m = world().with_pool_scoped_token("castle");
    m.add_to_pool(9000, "castle").unwrap();
    m.add_vm(430, "someone-elses", &[], false).unwrap();
    let e = m.vm_status("pve", 421).await.unwrap_err();
    assert!(
        e.is_forbidden() && e.to_string().contains("(/vms/421, VM.Audit)"),
        "{e}"
    );
    assert!(m.vmid_free(421).await.unwrap());
    assert!(!m.vmid_free(430).await.unwrap());
    let listed: Vec<u32> = m.list_vms().await.unwrap().iter().map(|v| v.vmid).collect();
    assert_eq!(listed, [9000]);
    let e = m
        .clone_vm("pve", 9000, &linked(421, "cp-1"))
        .await
        .unwrap_err();
    assert!(
        e.is_forbidden() && e.to_string().contains("VM.Allocate"),
        "{e}"
    );
    let mut into_pool = linked(421, "cp-1");
    into_pool.pool = Some("castle".into());
    let t = m.clone_vm("pve", 9000, &into_pool).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
    assert_eq!(m.vm_status("pve", 421).await.unwrap().unwrap().name, "cp-1");
    let mut unknown_pool = linked(422, "cp-2");
    unknown_pool.pool = Some("nope".into());
    let e = world()
        .clone_vm("pve", 9000, &unknown_pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pool 'nope' does not exist"), "{e}");
}

/// pve-guest-common `AbstractConfig::check_protection`, called by qemu-server
/// `destroy_vm` (`src/PVE/API2/Qemu.pm` e6352be6): "can't remove VM N -
/// protection mode enabled", a fact no retry changes.
#[tokio::test]
async fn a_protected_vm_cannot_be_deleted() {
    let m = world();
    clone_ready(&m, 421, "cp-1").await;
    m.set_protection(421, true).unwrap();
    let e = m.delete_vm("pve", 421).await.unwrap_err();
    assert!(e.to_string().contains("protection mode enabled"), "{e}");
    assert!(!e.is_transient());
    m.set_protection(421, false).unwrap();
    m.delete_vm("pve", 421).await.unwrap();
}
