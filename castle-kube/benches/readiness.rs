//! `cargo bench -p castle-kube --bench readiness`: how long after a status change
//! does a wait return? Measured on the real clock, never computed.
//!
//! - `KubeClient` (kube-rs watchers) against an in-process HTTP/1.1 API server that
//!   streams watch events: the time from the server committing a Deployment's new
//!   status (its resourceVersion bumped, as etcd would) to `wait` returning.
//! - The same server asked by a polling loop, as the reference setup's
//!   `until kubectl get ...; do sleep 5; done` does, with a 5 s and a 10 s period; the
//!   change falls at a random phase of the loop, as it does in a real rebirth.
//! - `MockCluster` (the lab's simulator), separately: a change made from outside
//!   (a node joins) and one its controllers make on their own clock (a rollout's
//!   modelled readiness).
//!
//! The server is a few dozen lines on tokio's TCP listener: discovery for apps/v1,
//! list, get, and watch as a chunked response that stays open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use castle_kube::{ClusterApi, Condition, KubeClient, Latency, MockCluster, ObjectRef};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

const NAMESPACE: &str = "bench";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/bench/deployments";

/// One open watch: the Deployment it selects (`metadata.name=`) and its connection.
struct Watch {
    name: String,
    events: mpsc::UnboundedSender<String>,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    objects: BTreeMap<String, Value>,
    watches: Vec<Watch>,
}

/// An API server serving one resource, Deployments in namespace `bench`.
#[derive(Clone, Default)]
struct ApiServer {
    state: Arc<Mutex<State>>,
    watch_opened: Arc<Notify>,
}

/// A Deployment as the deployment controller writes it (kubernetes
/// `pkg/controller/deployment/util/deployment_util.go`), which kstatus judges.
fn deployment(name: &str, resource_version: u64, available: u32) -> Value {
    let (status, reason, progress) = if available >= 1 {
        ("True", "MinimumReplicasAvailable", "NewReplicaSetAvailable")
    } else {
        ("False", "MinimumReplicasUnavailable", "ReplicaSetUpdated")
    };
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1,
                        "resourceVersion": resource_version.to_string()},
           "spec": {"replicas": 1, "progressDeadlineSeconds": 600},
           "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                      "readyReplicas": available, "availableReplicas": available,
                      "conditions": [{"type": "Available", "status": status, "reason": reason},
                                     {"type": "Progressing", "status": "True", "reason": progress}]}})
}

fn is_available(d: &Value) -> bool {
    d.pointer("/status/availableReplicas")
        .and_then(Value::as_u64)
        >= d.pointer("/spec/replicas").and_then(Value::as_u64)
}

impl ApiServer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A Deployment whose rollout has not finished.
    fn create(&self, name: &str) {
        let mut s = self.lock();
        s.resource_version += 1;
        let d = deployment(name, s.resource_version, 0);
        s.objects.insert(name.into(), d);
    }

    /// The rollout finishes: the new status is committed, then sent to every open
    /// watch of it. Returns the instant of the commit.
    fn make_available(&self, name: &str) -> Instant {
        let mut s = self.lock();
        s.resource_version += 1;
        let d = deployment(name, s.resource_version, 1);
        s.objects.insert(name.into(), d.clone());
        let committed = Instant::now();
        let event = json!({"type": "MODIFIED", "object": d}).to_string();
        s.watches.retain(|w| !w.events.is_closed());
        for w in s.watches.iter().filter(|w| w.name == name) {
            let _ = w.events.send(event.clone());
        }
        committed
    }

    async fn until_watched(&self, name: &str) {
        loop {
            let opened = self.watch_opened.notified();
            if self
                .lock()
                .watches
                .iter()
                .any(|w| w.name == name && !w.events.is_closed())
            {
                return;
            }
            opened.await;
        }
    }

    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = self.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                conn.set_nodelay(true).unwrap();
                tokio::spawn(server.clone().connection(conn));
            }
        });
        format!("http://{addr}")
    }

    /// Requests one after another on a kept-alive connection; a watch keeps it.
    async fn connection(self, conn: TcpStream) {
        let (read, mut write) = conn.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                match read.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => head.push(line),
                }
            }
            let target = head
                .first()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("/")
                .to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let query: BTreeMap<String, String> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect();
            let selected = query
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="))
                .map(str::to_string);
            if path == DEPLOYMENTS && query.get("watch").is_some_and(|w| w == "true") {
                let since: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.watch(selected.unwrap_or_default(), since, read, write)
                    .await;
                return;
            }
            let (status, body) = self.answer(path, selected.as_deref());
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if write.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, path: &str, selected: Option<&str>) -> (&'static str, String) {
        let s = self.lock();
        if path == "/apis/apps/v1" {
            let body = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                "resources": [{"name": "deployments", "singularName": "deployment", "namespaced": true,
                               "kind": "Deployment", "verbs": ["get", "list", "watch"]}]});
            return ("200 OK", body.to_string());
        }
        if path == DEPLOYMENTS {
            let items: Vec<&Value> = s
                .objects
                .iter()
                .filter(|(n, _)| selected.is_none_or(|want| want == n.as_str()))
                .map(|(_, d)| d)
                .collect();
            let body = json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
                "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items});
            return ("200 OK", body.to_string());
        }
        if let Some(d) = path
            .strip_prefix(DEPLOYMENTS)
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|name| s.objects.get(name))
        {
            return ("200 OK", d.to_string());
        }
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": 404, "reason": "NotFound", "message": format!("{path} not found")});
        ("404 Not Found", body.to_string())
    }

    /// A chunked response that stays open, one JSON event per chunk, until the
    /// client goes away.
    async fn watch(
        self,
        name: String,
        since: u64,
        mut read: BufReader<tokio::net::tcp::OwnedReadHalf>,
        mut write: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (events, mut pending) = mpsc::unbounded_channel();
        {
            let mut s = self.lock();
            // What changed after the list the client resumes from.
            if let Some(d) = s.objects.get(&name) {
                let rv: u64 = d
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if rv > since {
                    let _ = events.send(json!({"type": "MODIFIED", "object": d}).to_string());
                }
            }
            s.watches.push(Watch {
                name,
                events: events.clone(),
            });
        }
        drop(events);
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        self.watch_opened.notify_waiters();
        let mut scratch = [0u8; 512];
        loop {
            tokio::select! {
                event = pending.recv() => {
                    let Some(event) = event else { return };
                    let line = format!("{event}\n");
                    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                    if write.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                n = read.read(&mut scratch) => {
                    if !matches!(n, Ok(n) if n > 0) {
                        return;
                    }
                }
            }
        }
    }
}

/// Percent-decoding of a query value (kube-rs encodes `=` in field selectors).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A small deterministic generator for the phases (xorshift64*).
struct Phases(u64);

impl Phases {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn rollout(name: &str) -> Condition {
    Condition::Rollout(ObjectRef::new(
        "apps/v1",
        "Deployment",
        Some(NAMESPACE),
        name,
    ))
}

/// p50, p95 and max of latencies in ms.
fn summary(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "  {what:<46} n={:<4} p50 {:>8.2} ms  p95 {:>8.2} ms  max {:>8.2} ms  mean {:>8.2} ms",
        ms.len(),
        at(0.50),
        at(0.95),
        ms[ms.len() - 1],
        mean
    );
}

const WATCH_TRIALS: usize = 100;
const POLL_TRIALS: usize = 50;

async fn kube_client_watch(server: &ApiServer, client: &Arc<KubeClient>) -> Vec<f64> {
    let mut phases = Phases(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for i in 0..WATCH_TRIALS {
        let name = format!("watched-{i}");
        server.create(&name);
        let c = Arc::clone(client);
        let condition = rollout(&name);
        let waiting = tokio::spawn(async move {
            c.wait(&condition, Duration::from_secs(30)).await.unwrap();
            Instant::now()
        });
        server.until_watched(&name).await;
        // The change comes a little after the watch opened, at no special moment.
        tokio::time::sleep(Duration::from_secs_f64(phases.next() * 0.02)).await;
        let committed = server.make_available(&name);
        let returned = waiting.await.unwrap();
        out.push((returned - committed).as_secs_f64() * 1000.0);
    }
    out
}

/// `until <get shows it available>; do sleep <period>; done`, through the same client
/// and server; the change is committed at a uniformly random phase of the loop.
async fn polls(server: &ApiServer, client: &Arc<KubeClient>, period: Duration) -> Vec<f64> {
    let mut phases = Phases(0x2545_f491_4f6c_dd1d ^ period.as_secs());
    let mut trials = Vec::new();
    for i in 0..POLL_TRIALS {
        let name = format!("polled-{}s-{i}", period.as_secs());
        server.create(&name);
        let (server, client) = (server.clone(), Arc::clone(client));
        let delay = period.mul_f64(phases.next());
        trials.push(tokio::spawn(async move {
            let start = Instant::now();
            let change = {
                let (server, name) = (server.clone(), name.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + delay).await;
                    server.make_available(&name)
                })
            };
            let target = ObjectRef::new("apps/v1", "Deployment", Some(NAMESPACE), &name);
            let seen = loop {
                let d = client.get(&target).await.unwrap().unwrap();
                if is_available(&d) {
                    break Instant::now();
                }
                tokio::time::sleep(period).await;
            };
            let committed = change.await.unwrap();
            (seen - committed).as_secs_f64() * 1000.0
        }));
    }
    let mut out = Vec::new();
    for t in trials {
        out.push(t.await.unwrap());
    }
    out
}

/// A node joins from outside the waiting code; the wait for N Ready nodes returns.
async fn mock_outside_change() -> Vec<f64> {
    let cluster = MockCluster::new().with_latency(Latency::instant());
    let mut phases = Phases(0x5851_f42d_4c95_7f2d);
    let mut out = Vec::new();
    for i in 0..WATCH_TRIALS {
        let c = cluster.clone();
        let waiting = tokio::spawn(async move {
            c.wait(&Condition::NodesReady(i + 1), Duration::from_secs(30))
                .await
                .unwrap();
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs_f64(0.005 + phases.next() * 0.02)).await;
        // The node is inserted inside add_node: the instant before the call is the
        // earliest the change can count as made.
        let committed = Instant::now();
        cluster.add_node(&format!("node-{i}"));
        let returned = waiting.await.unwrap();
        out.push((returned - committed).as_secs_f64() * 1000.0);
    }
    out
}

/// A Deployment's modelled rollout (the lab's model, 100x faster than real time)
/// finishes on the simulator's own timer; the instant is read from its snapshot.
async fn mock_controller_change() -> Vec<f64> {
    let cluster = MockCluster::new().with_latency(Latency::lab().scaled(0.01));
    cluster
        .apply(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            false,
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for i in 0..POLL_TRIALS {
        let name = format!("rolled-{i}");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/lab/app:1"}]}}}});
        cluster.apply(&d, false).await.unwrap();
        let timer = format!("ready:apps/Deployment/{NAMESPACE}/{name}");
        let to_go = cluster.snapshot()["timers"][&timer].as_f64().unwrap();
        let ready_at = Instant::now() + Duration::from_secs_f64(to_go);
        cluster
            .wait(&rollout(&name), Duration::from_secs(30))
            .await
            .unwrap();
        out.push((Instant::now() - ready_at).as_secs_f64() * 1000.0);
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = ApiServer::default();
        let url = server.start().await;
        let config = kube::Config::new(url.parse().unwrap());
        let client = Arc::new(KubeClient::with_client(
            kube::Client::try_from(config).unwrap(),
            &url,
        ));
        println!(
            "readiness detection, real clock: from the status change being committed to the wait returning"
        );
        summary(
            "KubeClient watch (in-process API server)",
            kube_client_watch(&server, &client).await,
        );
        let (five, ten) = tokio::join!(
            polls(&server, &client, Duration::from_secs(5)),
            polls(&server, &client, Duration::from_secs(10)),
        );
        summary("poll, get every 5 s (same server and client)", five);
        summary("poll, get every 10 s (same server and client)", ten);
        summary(
            "MockCluster, a node joins (outside change)",
            mock_outside_change().await,
        );
        summary(
            "MockCluster, a rollout's modelled readiness",
            mock_controller_change().await,
        );
    });
}
