//! The HTTP client against wiremock (every request also checked against the PVE
//! API schema), and the mock's rules through the platform operations.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use castle_proxmox::ops::{
    DestroyOutcome, Fence, VmOutcome, VmSpec, destroy_vm, ensure_vm, list_owned,
};
use castle_proxmox::{
    CloneRequest, MockProxmox, ProxmoxApi, ProxmoxClient, Upid, VmConfig, wait_task,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const UPID: &str = "UPID:pve:000A1B2C:0123ABCD:65F0A1B2:qmclone:421:castle@pve!rebirth:";

fn client(server: &MockServer) -> ProxmoxClient {
    ProxmoxClient::with_client(
        reqwest::Client::new(),
        &server.uri(),
        "castle@pve!rebirth",
        &SecretString::from("canary-pve-secret"),
    )
}

/// Checks every request wiremock received against the PVE schema: the path exists,
/// the method is defined, and every parameter sent is one it declares.
fn check_against_schema(requests: &[wiremock::Request]) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/proxmox-ve-api-schema.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        eprintln!("skipping the schema check: {} is absent", file.display());
        return;
    };
    let tree: Value = serde_json::from_str(&text).unwrap();
    fn find<'a>(nodes: &'a Value, segments: &[&str], prefix: &str) -> Option<&'a Value> {
        let (first, rest) = segments.split_first()?;
        for n in nodes.as_array()? {
            let p = n.get("path")?.as_str()?;
            let last = p.rsplit('/').next()?;
            let matches = last == *first || (last.starts_with('{') && !first.is_empty());
            if matches && p.starts_with(prefix) {
                if rest.is_empty() {
                    return Some(n);
                }
                if let Some(found) = n.get("children").and_then(|c| find(c, rest, p)) {
                    return Some(found);
                }
            }
        }
        None
    }
    for r in requests {
        let p = r.url.path().trim_start_matches("/api2/json/");
        let segments: Vec<&str> = p.split('/').collect();
        let node =
            find(&tree, &segments, "/").unwrap_or_else(|| panic!("{p} is not in the PVE schema"));
        let info = node
            .pointer(&format!("/info/{}", r.method))
            .unwrap_or_else(|| panic!("{} {p} is not defined", r.method));
        let props = info
            .pointer("/parameters/properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut sent: Vec<String> = r.url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        sent.extend(url::form_urlencoded::parse(&r.body).map(|(k, _)| k.into_owned()));
        for k in sent {
            // Indexed parameters (`net0`, `ipconfig0`) appear in the schema as `net[n]`.
            let indexed = format!("{}[n]", k.trim_end_matches(|c: char| c.is_ascii_digit()));
            assert!(
                props.contains_key(&k) || props.contains_key(&indexed),
                "{} {p}: parameter `{k}` is not in the schema",
                r.method
            );
        }
        assert_eq!(
            info.get("allowtoken").and_then(Value::as_u64).unwrap_or(1),
            1,
            "{p} does not allow API tokens"
        );
    }
}

#[tokio::test]
async fn every_call_sends_what_the_schema_accepts_with_token_auth() {
    let server = MockServer::start().await;
    let auth = header(
        "Authorization",
        "PVEAPIToken=castle@pve!rebirth=canary-pve-secret",
    );
    let ok = |data: Value| ResponseTemplate::new(200).set_body_json(json!({ "data": data }));
    Mock::given(method("GET")).and(path("/api2/json/cluster/resources")).and(auth)
        .respond_with(ok(json!([{"id":"qemu/421","type":"qemu","vmid":421,"node":"pve","name":"cp-1","status":"running","template":0,"tags":"castle;lab"},{"id":"storage/pve/local","type":"storage"}])))
        .expect(1).mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/config"))
        .respond_with(ok(Value::Null))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/421/resize"))
        .respond_with(ok(Value::Null))
        .expect(1)
        .mount(&server)
        .await;
    for action in ["start", "stop", "shutdown"] {
        Mock::given(method("POST"))
            .and(path(format!(
                "/api2/json/nodes/pve/qemu/421/status/{action}"
            )))
            .respond_with(ok(json!(UPID)))
            .expect(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/421/status/current"))
        .respond_with(ok(
            json!({"status":"stopped","name":"cp-1","tags":"castle","lock":"clone"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api2/json/nodes/pve/qemu/421"))
        .respond_with(ok(json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ok(json!("424")))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].tags, ["castle", "lab"]);
    let upid = c
        .clone_vm(
            "pve",
            9000,
            &CloneRequest {
                newid: 421,
                name: "cp-1".into(),
                full: false,
                storage: None,
                description: Some("castle".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(upid.kind, "qmclone");
    let cfg = VmConfig {
        cores: Some(2),
        memory: Some(4096),
        net0: Some("virtio,bridge=vmbr0".into()),
        ipconfig0: Some("ip=192.168.1.211/24,gw=192.168.1.1".into()),
        tags: Some(vec!["castle".into()]),
        description: Some("d".into()),
        onboot: Some(true),
    };
    c.configure("pve", 421, &cfg).await.unwrap();
    c.resize_disk("pve", 421, "scsi0", 40).await.unwrap();
    c.start("pve", 421).await.unwrap();
    c.stop("pve", 421).await.unwrap();
    c.shutdown("pve", 421, Duration::from_secs(30))
        .await
        .unwrap();
    let status = c.vm_status("pve", 421).await.unwrap().unwrap();
    assert_eq!(status.lock.as_deref(), Some("clone"));
    c.delete("pve", 421).await.unwrap();
    assert_eq!(c.next_id().await.unwrap(), 424);
    let requests = server.received_requests().await.unwrap();
    let resize = requests
        .iter()
        .find(|r| r.url.path().ends_with("/resize"))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&resize.body), "disk=scsi0&size=40G");
    let delete = requests
        .iter()
        .find(|r| r.method.as_str() == "DELETE")
        .unwrap();
    assert_eq!(
        delete.url.query(),
        Some("purge=1&destroy-unreferenced-disks=1")
    );
    check_against_schema(&requests);
}

#[tokio::test]
async fn errors_classify_themselves_and_never_carry_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"data": null, "errors": {"newid": "VM 421 already exists on node 'pve'"}}),
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/api2/json/nodes/pve/qemu/9000/clone"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"data": null, "message": "clone failed: can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout\n"})))
        .expect(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let req = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        full: false,
        storage: None,
        description: None,
    };
    let e = c.clone_vm("pve", 9000, &req).await.unwrap_err();
    assert!(!e.is_transient());
    assert!(
        e.to_string().contains("newid: VM 421 already exists"),
        "{e}"
    );
    let e = c.clone_vm("pve", 9000, &req).await.unwrap_err();
    assert!(e.is_transient(), "a storage lock timeout passes: {e}");
    let e = c.list_vms().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(!e.is_transient());
    for text in [e.to_string(), format!("{e:?}"), format!("{c:?}")] {
        assert!(!text.contains("canary-pve-secret"), "{text}");
    }
    let unreachable = ProxmoxClient::with_client(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        "a@pve!b",
        &SecretString::from("canary-pve-secret"),
    );
    let e = unreachable.list_vms().await.unwrap_err();
    assert!(e.is_transient() && !e.to_string().contains("canary"), "{e}");
}

#[tokio::test]
async fn task_waits_treat_ok_and_warnings_as_success_and_carry_the_log_tail_otherwise() {
    let server = MockServer::start().await;
    let upid = Upid::parse(UPID).unwrap();
    // The UPID travels percent-encoded in the path.
    let status_path =
        || path_regex(r"^/api2/json/nodes/pve/tasks/UPID%3Apve%3A000A1B2C%3A.*%3A/status$");
    let log_path = path_regex(r"^/api2/json/nodes/pve/tasks/UPID%3A.*/log$");
    Mock::given(method("GET"))
        .and(status_path())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data":{"status":"running"}})),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(status_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data":{"status":"stopped","exitstatus":"WARNINGS: 1"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(status_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data":{"status":"stopped","exitstatus":"unable to create VM 421"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(log_path).respond_with(ResponseTemplate::new(200).set_body_json(json!({"data":[{"n":1,"t":"create full clone"},{"n":2,"t":"TASK ERROR: unable to create VM 421"}]}))).mount(&server).await;
    let c = client(&server);
    wait_task(&c, &upid, Duration::from_secs(60)).await.unwrap();
    let e = wait_task(&c, &upid, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("TASK ERROR: unable to create VM 421"),
        "{e}"
    );
    assert!(Upid::parse("UPID:pve:xyz").is_err());
}

fn spec(vmid: u32, name: &str) -> VmSpec {
    VmSpec {
        node: "pve".into(),
        vmid,
        name: name.into(),
        template: 9000,
        full_clone: false,
        storage: None,
        cores: 2,
        memory_mib: 4096,
        disk_gib: 40,
        net0: "virtio,bridge=vmbr0".into(),
        ipconfig0: "ip=192.168.1.211/24,gw=192.168.1.1".into(),
        tags: vec!["castle".into(), "lab".into()],
        description: "castle lab".into(),
    }
}

fn mock() -> MockProxmox {
    let m = MockProxmox::new().with_latency(castle_proxmox::Latency::lab());
    m.add_template("pve", 9000, "talos-golden");
    m
}

#[tokio::test(start_paused = true)]
async fn ensure_is_idempotent_and_destroy_respects_the_fence() {
    let m = mock();
    m.add_vm("pve", 425, "someone-elses", &["prod"], true);
    m.add_vm("pve", 500, "outside", &["castle"], false);
    let clones = tokio::sync::Semaphore::new(2);
    assert_eq!(
        ensure_vm(&m, &spec(421, "cp-1"), "castle", &clones)
            .await
            .unwrap(),
        VmOutcome::Created
    );
    assert_eq!(
        ensure_vm(&m, &spec(421, "cp-1"), "castle", &clones)
            .await
            .unwrap(),
        VmOutcome::Adopted
    );
    assert_eq!(m.list_vms().await.unwrap().len(), 4, "no duplicate");
    assert_eq!(
        m.config_of(421).unwrap()["ipconfig0"],
        "ip=192.168.1.211/24,gw=192.168.1.1"
    );
    let e = ensure_vm(&m, &spec(425, "worker-1"), "castle", &clones)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("taken by `someone-elses`"), "{e}");

    let fence = Fence {
        tag: "castle".into(),
        range: (420, 429),
    };
    assert_eq!(list_owned(&m, &fence).await.unwrap().len(), 1);
    assert!(matches!(
        destroy_vm(&m, "pve", 425, &fence, Duration::from_secs(30))
            .await
            .unwrap(),
        DestroyOutcome::Skipped(_)
    ));
    assert!(matches!(
        destroy_vm(&m, "pve", 500, &fence, Duration::from_secs(30))
            .await
            .unwrap(),
        DestroyOutcome::Skipped(_)
    ));
    assert_eq!(
        destroy_vm(&m, "pve", 421, &fence, Duration::from_secs(30))
            .await
            .unwrap(),
        DestroyOutcome::Deleted
    );
    assert_eq!(
        destroy_vm(&m, "pve", 421, &fence, Duration::from_secs(30))
            .await
            .unwrap(),
        DestroyOutcome::Absent
    );
    assert_eq!(m.list_vms().await.unwrap().len(), 3, "decoys untouched");
}

#[tokio::test(start_paused = true)]
async fn the_mock_refuses_what_proxmox_refuses() {
    let m = mock();
    m.add_vm("pve", 422, "busy", &["castle"], true);
    let e = m.delete("pve", 422).await.unwrap_err();
    assert!(e.to_string().contains("is running - destroy failed"));
    let e = m.start("pve", 9000).await.unwrap_err();
    assert!(e.to_string().contains("template"));
    let req = |id| CloneRequest {
        newid: id,
        name: format!("n{id}"),
        full: false,
        storage: None,
        description: None,
    };
    let e = m.clone_vm("pve", 9000, &req(422)).await.unwrap_err();
    assert!(e.to_string().contains("VM 422 already exists"));
    for id in 430..433 {
        m.clone_vm("pve", 9000, &req(id)).await.unwrap();
    }
    let e = m.clone_vm("pve", 9000, &req(433)).await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("can't lock file"),
        "{e}"
    );
    let e = m
        .configure(
            "pve",
            430,
            &VmConfig {
                memory: Some(512),
                ..VmConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("locked (clone)"), "{e}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let e = m
        .configure(
            "pve",
            430,
            &VmConfig {
                net0: Some("e1000".into()),
                ..VmConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("net0"), "{e}");
    let snapshot = m.snapshot();
    let again = MockProxmox::new();
    again.restore(&snapshot).unwrap();
    assert_eq!(
        again.list_vms().await.unwrap().len(),
        m.list_vms().await.unwrap().len()
    );
}
