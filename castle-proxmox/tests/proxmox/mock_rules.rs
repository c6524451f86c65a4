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
        format: None,
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

/// A clone makes its volume under its storage's lock: pve-storage
/// `src/PVE/Storage.pm` (0c56bad) `vdisk_clone` and `vdisk_alloc` run the plugin
/// inside `cluster_lock_storage`, which for local storage is
/// `PVE::Tools::lock_file("/var/lock/pve-manager/pve-storage-$storeid", undef, ...)`
/// (`src/PVE/Storage/Plugin.pm` `cluster_lock_storage`); pve-common
/// `src/PVE/Tools.pm` (f665029) `lock_file_full` waits `$timeout = 10` seconds and
/// fails with "can't lock file '$filename' - got timeout"; qemu-server
/// `src/PVE/API2/Qemu.pm` (e6352be6) `clone_vm` takes the lock inside its worker
/// and ends the task with "clone failed: $err", having removed the new config.
/// The template's own config lock is shared (`lock_config_shared`), so clones of
/// two templates onto one storage contend, and clones onto two storages do not.
#[tokio::test(start_paused = true)]
async fn clones_queue_on_their_storages_lock_and_give_up_after_ten_seconds() {
    let m = world().with_latency(Latency::lab());
    m.add_template(9001, "other-template", 8).unwrap();
    let mut tasks = Vec::new();
    for i in 0..12u32 {
        let template = if i % 2 == 0 { 9000 } else { 9001 };
        let task = m
            .clone_vm("pve", template, &linked(421 + i, &format!("n-{i}")))
            .await
            .expect("the API accepts the clone; its worker takes the lock");
        tasks.push((421 + i, task));
    }
    let mut failed = Vec::new();
    for (vmid, task) in &tasks {
        if let Err(e) = wait_task(&m, task, T).await {
            assert!(e.is_transient(), "{e}");
            assert!(e.retry_after().is_some());
            failed.push((*vmid, e.to_string()));
        }
    }
    // One second under the lock each: the twelfth would wait 11 s.
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (vmid, text) = &failed[0];
    assert_eq!(*vmid, 432);
    assert!(
        text.contains(
            "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
        ),
        "{text}"
    );
    assert!(m.vm_status("pve", 432).await.unwrap().is_none(), "removed");

    // Onto two storages at once, nobody waits long.
    m.add_storage("fast", "lvmthin", &["images"], 512);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let mut request = linked(440 + i, &format!("m-{i}"));
        if i % 2 == 1 {
            request.full = true;
            request.storage = Some("fast".into());
        }
        tasks.push(m.clone_vm("pve", 9000, &request).await.unwrap());
    }
    for task in &tasks {
        wait_task(&m, task, T).await.unwrap();
    }
    assert!(
        started.elapsed() <= Duration::from_secs(8 + 40 + 2),
        "{:?}",
        started.elapsed()
    );
}

/// qemu-server `src/PVE/API2/Qemu.pm` (e6352be6) `clone_vm`, `$load_and_check`:
/// `my $full = $param->{full} // !PVE::QemuConfig->is_template($conf)`; per disk,
/// a linked clone dies "Linked clone feature is not supported for '$volid' ($opt)"
/// unless `PVE::Storage::volume_has_feature($storecfg, 'clone', ...)`, a full one
/// "Full clone feature is not supported ..." unless `'copy'`. pve-storage (0c56bad)
/// `src/PVE/Storage/LvmThinPlugin.pm` `volume_has_feature`: `clone => { base => 1,
/// snap => 1 }` (a plain VM's `vm-N-disk-M` is `current`: no linked clone of it);
/// `src/PVE/Storage/LVMPlugin.pm`: no `clone` at all ("fixme: add later ?"),
/// `copy` of raw volumes; `src/PVE/Storage/Plugin.pm` (directory storages):
/// `clone => { base => { qcow2, raw, vmdk } }`, the clone named
/// `$basevmid/$basename/$vmid/$name` (`clone_image`).
#[tokio::test]
async fn linked_clones_need_a_base_volume_on_a_storage_that_links() {
    let m = world();
    m.add_vm(500, "plain", &[], false).unwrap();
    let e = m
        .clone_vm("pve", 500, &linked(421, "from-plain"))
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "proxmox POST /nodes/pve/qemu/500/clone: 500 Linked clone feature is not supported for 'local-lvm:vm-500-disk-0' (scsi0)"
    );
    assert!(!e.is_transient());
    let mut full = linked(421, "from-plain");
    full.full = true;
    let t = m.clone_vm("pve", 500, &full).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();

    m.add_storage("vg0", "lvm", &["images", "rootdir"], 512);
    m.add_template_on(9100, "on-plain-lvm", 8, "vg0").unwrap();
    let e = m
        .clone_vm("pve", 9100, &linked(422, "from-lvm"))
        .await
        .unwrap_err();
    assert!(
        message(&e)
            .ends_with("Linked clone feature is not supported for 'vg0:base-9100-disk-0' (scsi0)"),
        "{e}"
    );
    let mut full = linked(422, "from-lvm");
    full.full = true;
    let t = m.clone_vm("pve", 9100, &full).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();

    m.add_storage("local", "dir", &["images", "iso"], 100);
    m.add_template_on(9200, "on-a-directory", 8, "local")
        .unwrap();
    clone_on(&m, 9200, 423, "from-dir").await;
    let config = m.vm_config("pve", 423).await.unwrap();
    assert_eq!(
        config["scsi0"],
        "local:9200/base-9200-disk-0.qcow2/423/vm-423-disk-0.qcow2,size=8G"
    );
    let config = m.vm_config("pve", 424).await.err();
    assert!(config.is_some(), "nothing at 424 yet");
}

async fn clone_on(m: &MockProxmox, template: u32, vmid: u32, name: &str) {
    let t = m
        .clone_vm("pve", template, &linked(vmid, name))
        .await
        .unwrap();
    wait_task(m, &t, T).await.unwrap();
}

/// qemu-server `src/PVE/API2/Qemu.pm` (e6352be6) `clone_vm`: the schema's
/// `format => { enum => ['raw', 'qcow2', 'vmdk'] }` (400 naming `format`, as
/// pve-common `JSONSchema.pm` words an enum miss), and `$load_and_check`'s "parameter
/// 'format' not allowed for linked clones" (500).
#[tokio::test]
async fn a_format_is_for_full_clones_and_one_of_three() {
    let m = world();
    let mut request = linked(421, "cp-1");
    request.format = Some("qcow2".into());
    let e = m.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert!(
        message(&e).ends_with("500 parameter 'format' not allowed for linked clones"),
        "{e}"
    );
    request.full = true;
    request.format = Some("vhdx".into());
    let e = m.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        message(&e).contains(
            "format: value 'vhdx' does not have a value in the enumeration 'raw, qcow2, vmdk'"
        ),
        "{e}"
    );
    request.format = Some("raw".into());
    let t = m.clone_vm("pve", 9000, &request).await.unwrap();
    wait_task(&m, &t, T).await.unwrap();
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

/// pve-storage (0c56bad) `volume_has_feature` of each plugin, for a template's
/// volume (`base`) and a plain VM's (`current`):
/// `src/PVE/Storage/LvmThinPlugin.pm` clone `{ base, snap }`, copy `{ base,
/// current, snap }`; `LVMPlugin.pm` no clone, copy of raw/qcow2;
/// `ZFSPoolPlugin.pm` and `ZFSPlugin.pm` clone `{ base }`; `RBDPlugin.pm` clone
/// `{ base, snap }`; `BTRFSPlugin.pm` clone of any base and of a current raw
/// volume; `ISCSIPlugin.pm`/`ISCSIDirectPlugin.pm` copy `{ current }` only;
/// `PBSPlugin.pm` nothing; `Plugin.pm` (dir, nfs, cifs, glusterfs) clone
/// `{ base => { qcow2, raw, vmdk } }`.
#[test]
fn storage_types_link_and_copy_as_pve_storage_plugins_say() {
    use castle_proxmox::features::{Feature, links_templates, volume_has_feature};
    for (kind, links) in [
        ("lvmthin", true),
        ("zfspool", true),
        ("zfs", true),
        ("rbd", true),
        ("btrfs", true),
        ("dir", true),
        ("nfs", true),
        ("cifs", true),
        ("glusterfs", true),
        ("lvm", false),
        ("iscsi", false),
        ("iscsidirect", false),
        ("pbs", false),
    ] {
        assert_eq!(links_templates(kind), links, "{kind}");
    }
    assert!(!volume_has_feature(
        "lvmthin",
        Feature::Clone,
        "vm-100-disk-0"
    ));
    assert!(volume_has_feature(
        "lvmthin",
        Feature::Copy,
        "vm-100-disk-0"
    ));
    assert!(volume_has_feature("lvm", Feature::Copy, "vm-100-disk-0"));
    assert!(!volume_has_feature(
        "zfspool",
        Feature::Clone,
        "vm-100-disk-0"
    ));
    assert!(volume_has_feature("btrfs", Feature::Clone, "vm-100-disk-0"));
    assert!(volume_has_feature("iscsi", Feature::Copy, "lun0"));
    assert!(!volume_has_feature(
        "dir",
        Feature::Clone,
        "100/vm-100-disk-0.qcow2"
    ));
    assert!(volume_has_feature(
        "dir",
        Feature::Copy,
        "100/vm-100-disk-0.qcow2"
    ));
    assert!(!volume_has_feature("pbs", Feature::Copy, "backup/vm/100"));
}
