//! The real client against a raw TCP server that answers as pve-http-server did
//! before libpve-http-server-perl 5.2.0 (PVE 7.x, unpatched 8.0-8.3): the error
//! text only in the status line's reason phrase, the body `{"data":null}`.
//! wiremock cannot set a reason phrase, hence the hand-written server.
//!
//! Source: pve-http-server `src/PVE/APIServer/AnyEvent.pm` `response` (the phrase
//! is the message's first line, 936007a) and `src/PVE/APIServer/Formatter/Standard.pm`
//! before 9a2112e ("fix #6503: return api handler errors in the json body",
//! released in 5.2.0): the json formatter wrote no `message`.

use std::time::Duration;

use castle_proxmox::ops::{CloneLimiter, Fence, VmOutcome, VmSpec, ensure_vm};
use castle_proxmox::{CloneRequest, Error, ProxmoxApi, ProxmoxClient};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// One canned answer per request path (method and path, e.g. `GET /api2/json/...`),
/// matched by prefix; every request's first line is kept.
struct Answer {
    request: String,
    status_line: String,
    body: String,
}

fn answer(request: &str, status_line: &str, body: &str) -> Answer {
    Answer {
        request: request.into(),
        status_line: status_line.into(),
        body: body.into(),
    }
}

/// Serves `answers` over HTTP/1.1, one connection at a time, each request read up
/// to the end of its body; returns the base URL and the request lines it saw.
async fn serve(answers: Vec<Answer>) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            let head_end = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let first = head.lines().next().unwrap_or_default().to_string();
            let _ = seen_tx.send(first.clone());
            let answer = answers
                .iter()
                .find(|a| first.starts_with(&a.request))
                .map_or(("404 Not Found", "{\"data\":null}"), |a| {
                    (a.status_line.as_str(), a.body.as_str())
                });
            let response = format!(
                "HTTP/1.1 {}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                answer.0,
                answer.1.len(),
                answer.1
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (base, seen_rx)
}

fn client(base: &str) -> ProxmoxClient {
    ProxmoxClient::with_client(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
        "castle@pve!rebirth",
        &SecretString::from("canary-5ec2e7-6d1e-4f1b"),
    )
    .unwrap()
}

#[tokio::test]
async fn a_missing_vm_is_read_from_the_reason_phrase() {
    let (base, _seen) = serve(vec![answer(
        "GET /api2/json/nodes/pve/qemu/421/status/current",
        "500 Configuration file 'nodes/pve/qemu-server/421.conf' does not exist",
        "{\"data\":null}",
    )])
    .await;
    let found = client(&base).vm_status("pve", 421).await;
    assert!(
        matches!(found, Ok(None)),
        "the first status probe of a VM to be created reads as 'no such VM': {found:?}"
    );
}

#[tokio::test]
async fn stated_facts_in_the_reason_phrase_are_permanent_and_named() {
    let (base, _seen) = serve(vec![
        answer(
            "POST /api2/json/nodes/pve/qemu/9000/clone",
            "500 unable to create VM 421: config file already exists",
            "{\"data\":null}",
        ),
        answer(
            "DELETE /api2/json/nodes/pve/qemu/421",
            "500 can't remove VM 421 - protection mode enabled",
            "{\"data\":null}",
        ),
        answer(
            "PUT /api2/json/nodes/pve/qemu/421/config",
            "400 Parameter verification failed.",
            "{\"data\":null,\"errors\":{\"memory\":\"value must have a minimum value of 16\\n\"}}",
        ),
        answer(
            "GET /api2/json/cluster/resources",
            "500 Internal Server Error",
            "{\"data\":null}",
        ),
    ])
    .await;
    let c = client(&base);
    let request = CloneRequest {
        newid: 421,
        name: "cp-1".into(),
        ..CloneRequest::default()
    };
    let e = c.clone_vm("pve", 9000, &request).await.unwrap_err();
    assert!(e.to_string().contains("config file already exists"), "{e}");
    assert!(!e.is_transient(), "{e}");

    let e = c.delete_vm("pve", 421).await.unwrap_err();
    assert!(e.to_string().contains("protection mode enabled"), "{e}");
    assert!(!e.is_transient(), "a protected VM stays protected: {e}");

    let config = castle_proxmox::VmConfig {
        memory_mib: Some(8),
        ..castle_proxmox::VmConfig::default()
    };
    let e = c.configure("pve", 421, &config).await.unwrap_err();
    assert!(
        matches!(&e, Error::Api { status: 400, params, .. } if params["memory"].contains("minimum value of 16")),
        "{e}"
    );

    // The standard phrase is all there is: still a transient 500.
    let e = c.list_vms().await.unwrap_err();
    assert!(
        e.is_transient() && e.to_string().contains("Internal Server Error"),
        "{e}"
    );
}

/// The platform operation end to end against the older server: the first probe
/// says "does not exist" only in the reason phrase, so the VM is cloned, not
/// retried as if the server were failing.
#[tokio::test]
async fn ensure_vm_creates_against_an_older_server() {
    let upid = "UPID:pve:000A1B2C:0123ABCD:65F0A1B2:qmclone:9000:castle@pve!rebirth:";
    let task_path = "/api2/json/nodes/pve/tasks/UPID%3Apve%3A000A1B2C%3A0123ABCD%3A65F0A1B2%3Aqmclone%3A9000%3Acastle%40pve%21rebirth%3A/status";
    let task_request = format!("GET {task_path}");
    let clone_body = format!("{{\"data\":\"{upid}\"}}");
    let (base, mut seen) = serve(vec![
        answer(
            "GET /api2/json/nodes/pve/qemu/421/status/current",
            "500 Configuration file 'nodes/pve/qemu-server/421.conf' does not exist",
            "{\"data\":null}",
        ),
        answer(
            "GET /api2/json/nodes/pve/qemu/9000/config",
            "200 OK",
            "{\"data\":{\"boot\":\"order=scsi0;net0\",\"scsi0\":\"local-lvm:base-9000-disk-0,size=10G\",\"template\":1}}",
        ),
        answer(
            "POST /api2/json/nodes/pve/qemu/9000/clone",
            "200 OK",
            &clone_body,
        ),
        answer(
            // Stop here: what matters is that the clone was sent once.
            &task_request,
            "200 OK",
            "{\"data\":{\"status\":\"stopped\",\"exitstatus\":\"clone failed: storage 'x' is full\"}}",
        ),
    ])
    .await;
    let spec = VmSpec {
        name: "cp-1".into(),
        vmid: 421,
        node: "pve".into(),
        template: 9000,
        cores: 2,
        memory_mib: 2048,
        disk_gib: 20,
        bridge: "vmbr0".into(),
        mac: None,
        vlan: None,
        ip_cidr: "10.0.0.21/24".into(),
        gateway: None,
        tags: vec![],
        description: "cp-1".into(),
        full_clone: false,
        storage: None,
        format: None,
        pool: None,
        target: None,
    };
    let e = ensure_vm(
        &client(&base),
        &spec,
        &Fence::new("castle", 400..=499),
        &CloneLimiter::new(1),
    )
    .await
    .map(|o: VmOutcome| o)
    .unwrap_err();
    assert!(e.to_string().contains("storage 'x' is full"), "{e}");
    let mut lines = Vec::new();
    while let Ok(line) = seen.try_recv() {
        lines.push(line);
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("GET /api2/json/nodes/pve/qemu/421/status/current"))
            .count(),
        1,
        "one probe, not retried: {lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("POST")).count(),
        1,
        "{lines:#?}"
    );
}
