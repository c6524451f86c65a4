//! The real client against a fresh wiremock server per test.

use std::time::Duration;

use castle_proxmox::{
    CloneRequest, Error, PowerState, ProxmoxApi, ProxmoxClient, ProxmoxSettings, TaskExit,
    TaskStatus, Upid, VmConfig, wait_task,
};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_string, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::schema;

const SECRET: &str = "canary-5ec2e7-6d1e-4f1b";
const TOKEN_ID: &str = "castle@pve!rebirth";
const AUTH: &str = "PVEAPIToken=castle@pve!rebirth=canary-5ec2e7-6d1e-4f1b";
const UPID: &str = "UPID:pve:000A1B2C:0123ABCD:65F0A1B2:qmclone:421:castle@pve!rebirth:";
const UPID_PATH: &str = "/api2/json/nodes/pve/tasks/UPID%3Apve%3A000A1B2C%3A0123ABCD%3A65F0A1B2%3Aqmclone%3A421%3Acastle%40pve%21rebirth%3A";

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUMaJKxFQSPydfbuxdP7dG/Fz23NAwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOY2FzdGxlLXRlc3QtY2EwIBcNMjYxMTI4MDgwMjAxWhgPMjEy
NjExMDQwODAyMDFaMBkxFzAVBgNVBAMMDmNhc3RsZS10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAElcWZ5ZDMJNgpYT0icXMsSdqoi2tKfj9KEZIpjJWq
nK+9Js8lnIRQP5NxIFb/5Sq5W1+bubLfs+506rSVOujNwaNTMFEwHQYDVR0OBBYE
FIy9EJIhGG4/B4UeID4iIzqHkY+VMB8GA1UdIwQYMBaAFIy9EJIhGG4/B4UeID4i
IzqHkY+VMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgEW94fyvL
zF24yf5jBjP/RfiEOudIiLrkz/ZYGM89MN0CIAxI127AmY3nnN33nUOOk8lI28hs
AvU7Zdb9Z7Ao72bP
-----END CERTIFICATE-----
";

fn secret() -> SecretString {
    SecretString::from(SECRET)
}

fn client(server: &MockServer) -> ProxmoxClient {
    ProxmoxClient::with_client(reqwest::Client::new(), &server.uri(), TOKEN_ID, &secret()).unwrap()
}

fn upid() -> Upid {
    Upid::parse(UPID).unwrap()
}

fn ok(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "data": data }))
}

/// Checks what the server received against the PVE schema (when present).
async fn conforms(server: &MockServer) {
    if let Some(tree) = schema::load() {
        schema::check(&tree, &server.received_requests().await.unwrap());
    }
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "the token leaked into: {text}");
    assert!(
        !text.contains("canary"),
        "part of the token leaked into: {text}"
    );
}

#[tokio::test]
async fn list_vms_sends_the_token_and_reads_qemu_entries_only() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .and(query_param("type", "vm"))
        .and(header("authorization", AUTH))
        .respond_with(ok(json!([
            {"id": "qemu/421", "type": "qemu", "vmid": 421, "node": "pve", "name": "cp-1",
             "status": "running", "tags": "castle;k8s", "maxdisk": 34359738368u64},
            {"id": "qemu/9000", "type": "qemu", "vmid": 9000, "node": "pve", "name": "talos",
             "status": "stopped", "template": 1},
            {"id": "qemu/422", "type": "qemu", "vmid": "422", "node": "pve", "name": "w-1",
             "status": "stopped", "lock": "clone"},
            {"id": "lxc/300", "type": "lxc", "vmid": 300, "node": "pve", "status": "running"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let vms = client(&server).list_vms().await.unwrap();
    assert_eq!(vms.len(), 3);
    assert_eq!(vms[0].tags, vec!["castle", "k8s"]);
    assert_eq!(vms[0].status, PowerState::Running);
    assert_eq!(vms[0].maxdisk, 32 << 30);
    assert!(vms[1].template);
    assert_eq!((vms[2].vmid, vms[2].lock.as_deref()), (422, Some("clone")));
    conforms(&server).await;
}

#[tokio::test]
async fn vm_status_reads_a_vm_and_maps_a_missing_one_to_none() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/current"))
        .respond_with(ok(json!({"vmid": 421, "name": "cp-1", "status": "stopped",
            "tags": "castle", "lock": "clone", "maxdisk": 1024})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/499/status/current"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"data": null,
            "message": "Configuration file 'nodes/pve/qemu-server/499.conf' does not exist\n"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let vm = c.vm_status("pve", 421).await.unwrap().unwrap();
    assert_eq!(
        (vm.node.as_str(), vm.lock.as_deref(), vm.maxdisk),
        ("pve", Some("clone"), 1024)
    );
    assert!(c.vm_status("pve", 499).await.unwrap().is_none());
    conforms(&server).await;
}

#[tokio::test]
async fn vm_config_turns_values_into_text() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/421/config"))
        .respond_with(ok(
            json!({"cores": 4, "memory": "4096", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "onboot": 1, "digest": "abc"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let config = client(&server).vm_config("pve", 421).await.unwrap();
    assert_eq!(config["cores"], "4");
    assert_eq!(config["memory"], "4096");
    assert_eq!(config["onboot"], "1");
    conforms(&server).await;
}

#[tokio::test]
async fn clone_posts_a_form_and_returns_the_task() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .and(header("authorization", AUTH))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "newid=421&name=cp-1&full=1&storage=local-lvm&description=castle+node",
        ))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    let request = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        full: true,
        storage: Some("local-lvm".into()),
        format: None,
        description: Some("castle node".into()),
        pool: None,
        target: None,
    };
    let task = client(&server)
        .clone_vm("pve", 9000, &request)
        .await
        .unwrap();
    assert_eq!(
        (task.kind(), task.id(), task.node()),
        ("qmclone", "421", "pve")
    );
    conforms(&server).await;
}

/// What qemu-server `clone_vm` (`src/PVE/API2/Qemu.pm` at e6352be6) refuses of the
/// parameters alone is refused before sending: `storage` or `format` on a linked
/// clone ("parameter '...' not allowed for linked clones", `$load_and_check`), a
/// `format` outside the schema's enum. A full clone's `format` goes on the wire.
#[tokio::test]
async fn a_clone_proxmox_would_refuse_is_never_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .and(body_string(
            "newid=421&name=cp-1&full=1&storage=local-lvm&format=qcow2",
        ))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    let linked = |storage: Option<&str>, format: Option<&str>| CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        storage: storage.map(str::to_string),
        format: format.map(str::to_string),
        ..CloneRequest::default()
    };
    for request in [
        linked(Some("local-lvm"), None),
        linked(None, Some("qcow2")),
        CloneRequest {
            full: true,
            ..linked(None, Some("vhdx"))
        },
    ] {
        let e = client(&server)
            .clone_vm("pve", 9000, &request)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .starts_with("proxmox: not sent: clone to 421: parameter '"),
            "{e}"
        );
    }
    let full = CloneRequest {
        full: true,
        ..linked(Some("local-lvm"), Some("qcow2"))
    };
    client(&server).clone_vm("pve", 9000, &full).await.unwrap();
    conforms(&server).await;
}

#[tokio::test]
async fn configure_puts_wire_names_and_reports_each_bad_parameter() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/config"))
        .and(body_string_contains("cores=4"))
        .and(body_string_contains("tags=castle%3Bk8s"))
        .and(body_string_contains(
            "ipconfig0=ip%3D10.0.0.5%2F24%2Cgw%3D10.0.0.1",
        ))
        .respond_with(ok(json!(null)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/422/config"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"data": null, "errors": {
            "memory": "value must have a minimum value of 16\n",
            "net0": "invalid format - unknown network model 'virtoi'\n"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let config = VmConfig {
        cores: Some(4),
        memory_mib: Some(4096),
        net0: Some("virtio,bridge=vmbr0,tag=20".into()),
        ipconfig0: Some("ip=10.0.0.5/24,gw=10.0.0.1".into()),
        tags: Some(vec!["castle".into(), "k8s".into()]),
        description: Some("node cp-1".into()),
        onboot: Some(true),
        ..VmConfig::default()
    };
    c.configure("pve", 421, &config).await.unwrap();
    let bad = VmConfig {
        memory_mib: Some(8),
        net0: Some("virtoi,bridge=vmbr0".into()),
        ..VmConfig::default()
    };
    let e = c.configure("pve", 422, &bad).await.unwrap_err();
    assert!(!e.is_transient());
    assert_eq!(e.status(), Some(400));
    let text = e.to_string();
    assert!(text.contains("Parameter verification failed."), "{text}");
    assert!(
        text.contains("memory: value must have a minimum value of 16"),
        "{text}"
    );
    assert!(text.contains("net0: invalid format"), "{text}");
    conforms(&server).await;
}

#[tokio::test]
async fn resize_accepts_a_task_or_null() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/resize"))
        .and(body_string("disk=scsi0&size=32G"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/422/resize"))
        .respond_with(ok(json!(null)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert!(
        c.resize_disk("pve", 421, "scsi0", 32)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        c.resize_disk("pve", 422, "scsi0", 32)
            .await
            .unwrap()
            .is_none()
    );
    conforms(&server).await;
}

#[tokio::test]
async fn power_calls_and_delete_with_purge() {
    let server = MockServer::start().await;
    for action in ["start", "stop"] {
        Mock::given(method("POST"))
            .and(path(format!(
                "/api2/json/nodes/pve/qemu/421/status/{action}"
            )))
            .and(body_string(""))
            .respond_with(ok(json!(UPID)))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/shutdown"))
        .and(body_string("timeout=90"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api2/json/nodes/pve/qemu/421"))
        .and(query_param("purge", "1"))
        .and(query_param("destroy-unreferenced-disks", "1"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    c.start("pve", 421).await.unwrap();
    c.stop("pve", 421).await.unwrap();
    c.shutdown("pve", 421, Duration::from_secs(90))
        .await
        .unwrap();
    c.delete_vm("pve", 421).await.unwrap();
    conforms(&server).await;
}

/// pve-manager `PVE/API2Tools.pm` (14a22df3) `extract_vm_stats` starts every
/// entry as `status => 'unknown'` and adds name, template and maxdisk only when
/// the VM has statistics (a brand-new VM, a VM on an offline node has none).
#[tokio::test]
async fn a_listing_with_unknown_entries_still_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ok(json!([
            {"id": "qemu/421", "type": "qemu", "vmid": 421, "node": "pve", "name": "lab-cp-1",
             "status": "running", "tags": "castle", "maxdisk": 10737418240u64},
            {"id": "qemu/422", "type": "qemu", "vmid": 422, "node": "pve",
             "status": "unknown", "lock": "clone"},
            {"id": "qemu/423", "type": "qemu", "vmid": 423, "node": "pve-offline",
             "status": "unknown", "tags": "castle;lab"}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let vms = client(&server).list_vms().await.unwrap();
    assert_eq!(vms.len(), 3);
    assert_eq!(
        (vms[1].status, vms[1].name.as_str(), vms[1].lock.as_deref()),
        (PowerState::Unknown, "", Some("clone"))
    );
    assert_eq!(vms[2].status, PowerState::Unknown);
    assert!(
        vms[2].has_tag("castle"),
        "tags come from the config regardless"
    );
    conforms(&server).await;
}

/// pve-manager `PVE/API2/Cluster.pm` (14a22df3) `nextid`: `user => 'all'`; a taken
/// id answers `raise_param_exc({ vmid => "VM $vmid already exists" })`.
#[tokio::test]
async fn vmid_free_asks_nextid_with_the_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .and(query_param("vmid", "421"))
        .respond_with(ok(json!(421)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .and(query_param("vmid", "430"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"data": null,
            "errors": {"vmid": "VM 430 already exists\n"},
            "message": "Parameter verification failed.\n"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert!(c.vmid_free(421).await.unwrap());
    assert!(!c.vmid_free(430).await.unwrap());
    conforms(&server).await;
}

#[tokio::test]
async fn next_id_accepts_string_and_integer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ok(json!("105")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ok(json!(106)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(c.next_id().await.unwrap(), 105);
    assert_eq!(c.next_id().await.unwrap(), 106);
    conforms(&server).await;
}

#[tokio::test]
async fn a_non_task_answer_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/start"))
        .respond_with(ok(json!({"unexpected": true})))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server).start("pve", 421).await.unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn task_status_and_log_tail() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/status")))
        .respond_with(ok(json!({"status": "running", "upid": UPID})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/status")))
        .respond_with(ok(
            json!({"status": "stopped", "exitstatus": "WARNINGS: 2"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/log")))
        .and(query_param("start", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 12,
            "data": [{"n": 1, "t": "line 1"}, {"n": 2, "t": "line 2"}, {"n": 3, "t": "line 3"}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/log")))
        .and(query_param("start", "9"))
        .and(query_param("limit", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 12,
            "data": [{"n": 10, "t": "line 10"}, {"n": 11, "t": "line 11"}, {"n": 12, "t": "TASK OK"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(c.task_status(&upid()).await.unwrap(), TaskStatus::Running);
    assert_eq!(
        c.task_status(&upid()).await.unwrap(),
        TaskStatus::Stopped(TaskExit::Warnings(2))
    );
    assert_eq!(
        c.task_log(&upid(), 3).await.unwrap(),
        vec!["line 10", "line 11", "TASK OK"]
    );
    conforms(&server).await;
}

#[tokio::test]
async fn a_failed_task_carries_the_log_tail() {
    let server = MockServer::start().await;
    let lock = "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout";
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/status")))
        .respond_with(ok(json!({"status": "stopped", "exitstatus": lock})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/log")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 2,
            "data": [{"n": 1, "t": "create linked clone of drive scsi0"}, {"n": 2, "t": format!("TASK ERROR: {lock}")}]})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = wait_task(&c, &upid(), Duration::from_secs(10))
        .await
        .unwrap_err();
    match &e {
        Error::Task {
            exitstatus,
            log_tail,
            ..
        } => {
            assert_eq!(exitstatus, lock);
            assert_eq!(
                log_tail.last().map(String::as_str),
                Some(format!("TASK ERROR: {lock}").as_str())
            );
        }
        other => panic!("expected a task error, got {other}"),
    }
    assert!(e.is_transient(), "a lock timeout passes");
    assert!(e.to_string().contains("create linked clone"));
    conforms(&server).await;
}

#[tokio::test]
async fn unauthorized_is_permanent_and_never_shows_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let e = c.list_vms().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(!e.is_transient());
    assert!(e.to_string().contains("proxmox.token_id"), "{e}");
    assert_no_secret(&e.to_string());
    assert_no_secret(&format!("{e:?}"));
    assert_no_secret(&format!("{c:?}"));
    let settings = ProxmoxSettings::new("https://pve:8006", TOKEN_ID, secret());
    assert_no_secret(&format!("{settings:?}"));
}

#[tokio::test]
async fn forbidden_and_not_found_are_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"data": null,
            "message": "Permission check failed (/vms/421, VM.Allocate)"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/start"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let request = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        full: false,
        storage: None,
        format: None,
        description: None,
        pool: None,
        target: None,
    };
    let e = c.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains("VM.Allocate"), "{e}");
    let e = c.start("pve", 421).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(!e.is_transient());
}

#[tokio::test]
async fn lock_timeouts_and_5xx_are_transient_but_stated_facts_are_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"data": null,
            "message": "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout\n"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"data": null,
            "message": "VM 421 already exists on node 'pve'\n"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let request = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        full: false,
        storage: None,
        format: None,
        description: None,
        pool: None,
        target: None,
    };
    let e = c.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.retry_after().is_some());
    let e = c.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("VM 421 already exists"));
    let e = c.list_vms().await.unwrap_err();
    assert_eq!(e.status(), Some(502));
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_and_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = ProxmoxClient::with_client(
        reqwest::Client::new(),
        &format!("http://{addr}"),
        TOKEN_ID,
        &secret(),
    )
    .unwrap();
    let e = c.list_vms().await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e.is_transient());
    assert_no_secret(&format!("{e} {e:?}"));
}

#[tokio::test]
async fn a_slow_server_is_no_answer_and_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ok(json!([])).set_delay(Duration::from_secs(5)))
        .expect(1)
        .mount(&server)
        .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let c = ProxmoxClient::with_client(http, &server.uri(), TOKEN_ID, &secret()).unwrap();
    let e = c.list_vms().await.unwrap_err();
    assert!(matches!(e, Error::NoAnswer { .. }), "{e}");
    assert!(e.is_transient());
}

#[test]
fn settings_are_safe_by_default() {
    let s = ProxmoxSettings::new("https://pve:8006", TOKEN_ID, secret());
    assert!(!s.insecure && s.ca_file.is_none());
    assert!(ProxmoxClient::new(&s).is_ok());

    let plain = ProxmoxSettings::new("http://pve:8006", TOKEN_ID, secret());
    assert!(matches!(ProxmoxClient::new(&plain), Err(Error::Setup(_))));

    let bad_id = ProxmoxSettings::new("https://pve:8006", "castle-no-realm", secret());
    let e = ProxmoxClient::new(&bad_id).unwrap_err();
    assert!(matches!(e, Error::Setup(_)));
    assert_no_secret(&e.to_string());

    let dir = tempfile::tempdir().unwrap();
    let missing = s.clone().with_ca_file(dir.path().join("absent.pem"));
    assert!(matches!(ProxmoxClient::new(&missing), Err(Error::Setup(_))));
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    assert!(matches!(
        ProxmoxClient::new(&s.clone().with_ca_file(&junk)),
        Err(Error::Setup(_))
    ));
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CA_PEM).unwrap();
    assert!(ProxmoxClient::new(&s.clone().with_ca_file(&ca)).is_ok());
    assert!(ProxmoxClient::new(&s.with_insecure(true)).is_ok());
}

/// Every call the client makes, against one server, checked against the schema.
#[tokio::test]
async fn contract_every_request_exists_in_the_pve_schema() {
    let Some(tree) = schema::load() else { return };
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ok(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ok(json!("100")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/current"))
        .respond_with(ok(json!({"status": "stopped"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/421/config"))
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/status")))
        .respond_with(ok(json!({"status": "stopped", "exitstatus": "OK"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{UPID_PATH}/log")))
        .respond_with(ok(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/config"))
        .respond_with(ok(json!(null)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/resize"))
        .respond_with(ok(json!(null)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok(json!(UPID)))
        .expect(4)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    c.list_vms().await.unwrap();
    c.next_id().await.unwrap();
    c.vm_status("pve", 421).await.unwrap();
    c.vm_config("pve", 421).await.unwrap();
    let request = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        full: true,
        storage: Some("local-lvm".into()),
        format: None,
        description: Some("d".into()),
        pool: None,
        target: None,
    };
    c.clone_vm("pve", 9000, &request).await.unwrap();
    let config = VmConfig {
        cores: Some(2),
        memory_mib: Some(2048),
        net0: Some("virtio,bridge=vmbr0,tag=5".into()),
        ipconfig0: Some("ip=10.0.0.5/24,gw=10.0.0.1".into()),
        tags: Some(vec!["castle".into()]),
        description: Some("d".into()),
        onboot: Some(true),
        extra: [("agent".to_string(), "0".to_string())].into(),
    };
    c.configure("pve", 421, &config).await.unwrap();
    c.resize_disk("pve", 421, "scsi0", 32).await.unwrap();
    c.start("pve", 421).await.unwrap();
    c.shutdown("pve", 421, Duration::from_secs(60))
        .await
        .unwrap();
    c.stop("pve", 421).await.unwrap();
    c.delete_vm("pve", 421).await.unwrap();
    c.task_status(&upid()).await.unwrap();
    c.task_log(&upid(), 5).await.unwrap();
    let received = server.received_requests().await.unwrap();
    // The log holds no `total`, so its tail takes one request.
    assert_eq!(received.len(), 13);
    schema::check(&tree, &received);
}

#[test]
fn the_schema_check_catches_what_the_server_would_refuse() {
    let Some(tree) = schema::load() else { return };
    let request = |m: &str, url: &str, body: &str| wiremock::Request {
        url: url::Url::parse(url).unwrap(),
        method: m.parse().unwrap(),
        headers: Default::default(),
        body: body.as_bytes().to_vec(),
    };
    let cases = [
        request(
            "PUT",
            "http://x/api2/json/nodes/pve/qemu/1/config",
            "colour=red",
        ),
        request("PATCH", "http://x/api2/json/nodes/pve/qemu/1/config", ""),
        request("GET", "http://x/api2/json/nodes/pve/qemu/1/nonsense", ""),
        request(
            "POST",
            "http://x/api2/json/nodes/pve/qemu/1/clone",
            "newid=2&full=yes",
        ),
    ];
    for case in cases {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            schema::check(&tree, std::slice::from_ref(&case));
        }));
        assert!(
            r.is_err(),
            "{} {} should fail the schema check",
            case.method,
            case.url
        );
    }
}
