//! `[state] backend = "vault"`: the journal and the cluster lock in Vault KV v2,
//! in the lab's own Vault and in the real OpenBao of the test command.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use castle_core::castle::{Castle, RunOptions};
use castle_core::events::{Event, Events, Recorder};
use castle_core::journal::{Journal, JournalError, JournalState};
use castle_core::state::{StateBackend, Transferred, VaultState};
use castle_tests::{lab_copy, paused};
use castle_vault::VaultApi;
use secrecy::SecretString;

use crate::openbao::openbao;

fn recorder() -> (Recorder, RunOptions) {
    let r = Recorder::new();
    let options = RunOptions {
        events: Events::new().with(Arc::new(r.clone())),
        ..RunOptions::default()
    };
    (r, options)
}

fn skipped(rec: &Recorder) -> Vec<String> {
    rec.events()
        .iter()
        .filter_map(|e| match e {
            Event::StepSkipped { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

fn notices(rec: &Recorder) -> String {
    rec.events()
        .iter()
        .filter_map(|e| match e {
            Event::StateNotice { message } => Some(message.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A name no other run against the same OpenBao uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{:x}", nanos % 0x0fff_ffff)
}

fn client(addr: &str, token: &SecretString) -> castle_vault::VaultClient {
    castle_vault::VaultClient::new(castle_vault::VaultSettings::new(addr, token.clone())).unwrap()
}

/// Waits until the journal `vault` keeps for `cluster` says `platform` is done.
async fn until_platform_is_done(vault: &castle_vault::VaultClient, cluster: &str) {
    let journal_path = format!("secret/data/castle/{cluster}/state/journal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Not there yet, or the mount still settling: ask again.
        let done = vault
            .read(&journal_path)
            .await
            .ok()
            .flatten()
            .and_then(|d| {
                d.pointer("/data/journal")
                    .and_then(|j| j.as_str())
                    .map(str::to_string)
            })
            .and_then(|t| JournalState::from_text(&t, Path::new("vault")).ok())
            .is_some_and(|j| j.outputs("platform").is_some());
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "platform never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `create --resume` once Vault answers again: it writes back the journal kept on
/// this machine, says so, and finishes.
async fn resume_writes_back_and_finishes(castle: &Castle, kept: &Path) -> Recorder {
    let (rec, options) = recorder();
    let resumed = castle
        .create(RunOptions {
            resume: true,
            ..options
        })
        .await
        .unwrap();
    assert!(
        resumed.error.is_none(),
        "{:?}",
        resumed.error.map(|e| e.to_string())
    );
    let said = notices(&rec);
    eprintln!("the resumed run: {said}; skipped {:?}", skipped(&rec));
    assert!(
        said.contains("wrote the journal this machine kept"),
        "{said}"
    );
    assert!(!kept.exists());
    rec
}

/// The lab with its state in the lab's own (simulated) Vault: nothing in
/// `.castle/state.json`, and `--resume` reads what the first run wrote there.
#[tokio::test(start_paused = true)]
async fn the_lab_keeps_its_state_in_its_own_vault() {
    let (dir, config) = lab_copy(|t| paused(t) + "\n[state]\nbackend = \"vault\"\n");
    let castle = Castle::open(&config).unwrap();
    // `castle doctor` asks for the state's KV paths too.
    let findings = castle.doctor().await;
    assert!(!castle_probe::any_failed(&findings), "{findings:#?}");
    for key in ["journal", "lock"] {
        let check = format!("create, read, update on secret/data/castle/lab/state/{key}");
        assert!(
            findings.iter().any(|f| f.check == check),
            "{check}: {findings:#?}"
        );
    }
    let summary = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        summary.error.is_none(),
        "{:?}",
        summary.error.map(|e| e.to_string())
    );
    assert!(!dir.path().join(".castle/state.json").exists());
    let status = castle.status().await.unwrap();
    assert_eq!(
        status.steps.len(),
        castle.step_ids().unwrap().len(),
        "{}",
        status.render()
    );
    let info = castle.state_info().await.unwrap();
    assert!(
        info.holder.is_none(),
        "released at the end: {}",
        info.render()
    );
    assert!(
        info.location.contains("secret/castle/lab/state"),
        "{}",
        info.render()
    );

    // Another process (the world is saved to disk after every write).
    let (rec, options) = recorder();
    let again = Castle::open(&config)
        .unwrap()
        .create(RunOptions {
            resume: true,
            ..options
        })
        .await
        .unwrap();
    assert!(again.error.is_none());
    assert_eq!(
        skipped(&rec).len(),
        castle.step_ids().unwrap().len(),
        "nothing to do"
    );
    let destroyed = castle.destroy(RunOptions::default(), false).await.unwrap();
    assert!(destroyed.error.is_none());
    assert!(castle.status().await.unwrap().steps.is_empty());
}

/// Two writers read the same version and write at once, 100 times, against the
/// real OpenBao: each time exactly one is taken and the other is refused with a
/// conflict, keeping its journal on its machine; once it goes on from the stored
/// journal, its change lands too. No write is ever lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_journal_writers_never_lose_a_write_against_openbao() {
    let Some((addr, token)) = openbao() else {
        return;
    };
    let cluster = unique("race");
    let path = format!("castle/{cluster}/state");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = |dir: &Path| {
        VaultState::new(
            Arc::new(client(&addr, &token)),
            &addr,
            "secret",
            &path,
            &cluster,
            dir,
        )
    };
    let (a, b) = (writer(da.path()), writer(db.path()));
    let kept = |dir: &Path| dir.join(".castle").join(castle_core::state::KEPT_FILE);
    let with = |stored: &str, step: &str| {
        let mut j = JournalState::from_text(stored, Path::new("vault")).unwrap();
        j.last_run = Some(step.to_string());
        j.steps.insert(
            step.to_string(),
            serde_json::from_value(serde_json::json!({
                "status": "done", "fingerprint": step, "attempts": 1,
                "run_id": step, "duration_ms": 1
            }))
            .unwrap(),
        );
        j.to_text(Path::new("x")).unwrap()
    };
    let first = JournalState::empty(&cluster)
        .to_text(Path::new("x"))
        .unwrap();
    a.write(&first, 0).await.unwrap();
    let rounds = 100;
    let mut conflicts = 0;
    for i in 0..rounds {
        let (ra, rb) = tokio::join!(a.read(), b.read());
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        assert_eq!(ra.version, rb.version, "round {i}: both read one version");
        let (ta, tb) = (
            with(&ra.text, &format!("a{i:03}")),
            with(&rb.text, &format!("b{i:03}")),
        );
        let (wa, wb) = tokio::join!(a.write(&ta, ra.version), b.write(&tb, rb.version));
        let (loser, loser_dir, lost_text, step) = match (&wa, &wb) {
            (Ok(_), Err(JournalError::Conflict { .. })) => (&b, db.path(), &tb, format!("b{i:03}")),
            (Err(JournalError::Conflict { .. }), Ok(_)) => (&a, da.path(), &ta, format!("a{i:03}")),
            other => panic!("round {i}: one write must win, the other conflict: {other:?}"),
        };
        conflicts += 1;
        // The refused journal is kept, not lost.
        let kept_text = std::fs::read_to_string(kept(loser_dir)).unwrap();
        let kept_json: serde_json::Value = serde_json::from_str(&kept_text).unwrap();
        assert_eq!(kept_json["journal"].as_str(), Some(lost_text.as_str()));
        // As the message says: delete it to go on from the stored journal.
        assert!(matches!(
            loser.read().await,
            Err(JournalError::Diverged { .. })
        ));
        std::fs::remove_file(kept(loser_dir)).unwrap();
        let now = loser.read().await.unwrap().unwrap();
        loser
            .write(&with(&now.text, &step), now.version)
            .await
            .unwrap();
    }
    let stored =
        JournalState::from_text(&a.read().await.unwrap().unwrap().text, Path::new("vault"))
            .unwrap();
    let missing: Vec<String> = (0..rounds)
        .flat_map(|i| [format!("a{i:03}"), format!("b{i:03}")])
        .filter(|s| !stored.steps.contains_key(s))
        .collect();
    eprintln!(
        "racing writers: {conflicts}/{rounds} races refused one writer, {} of {} writes stored",
        2 * rounds - missing.len(),
        2 * rounds
    );
    assert_eq!(conflicts, rounds);
    assert!(missing.is_empty(), "lost writes: {missing:?}");
}

/// `castle state push` then `pull` round-trips the journal byte for byte through
/// the real OpenBao; what Vault holds of the state carries no secret of the lab;
/// each refuses to overwrite a newer journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trips_byte_for_byte_and_vault_holds_no_secret() {
    let Some((addr, token)) = openbao() else {
        return;
    };
    let cluster = unique("push");
    let rename = |t: String| {
        t.replace("time_scale = 0.02", "time_scale = 0.002")
            .replacen("name = \"lab\"", &format!("name = \"{cluster}\""), 1)
    };
    let (dir, config) = lab_copy(rename);
    // Canaries in every secret the lab reads, the state's own token aside (the
    // real server needs the real one; it is audited all the same).
    let secrets = dir.path().join("secrets");
    let mut canaries: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&secrets).unwrap() {
        let e = e.unwrap();
        let value = format!("canary-{}-7f3a9c", e.file_name().to_string_lossy());
        std::fs::write(e.path(), &value).unwrap();
        canaries.push(value);
    }
    {
        use secrecy::ExposeSecret as _;
        std::fs::write(secrets.join("state-token"), token.expose_secret()).unwrap();
        canaries.push(token.expose_secret().to_string());
    }
    let castle = Castle::open(&config).unwrap();
    let created = castle.create(RunOptions::default()).await.unwrap();
    assert!(
        created.error.is_none(),
        "{:?}",
        created.error.map(|e| e.to_string())
    );
    let file = dir.path().join(".castle/state.json");
    let original = std::fs::read(&file).unwrap();

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}\n[state]\nbackend = \"vault\"\naddress = \"{addr}\"\ntoken = {{ file = \"state-token\" }}\n"
        ),
    )
    .unwrap();
    let shared = Castle::open(&config).unwrap();
    assert!(matches!(
        shared.state_push(false).await.unwrap(),
        Transferred::Copied { .. }
    ));
    assert_eq!(shared.state_push(false).await.unwrap(), Transferred::Same);

    let vault = client(&addr, &token);
    let audit = |what: &str, value: &serde_json::Value| {
        let raw = value.to_string();
        for c in &canaries {
            assert!(!raw.contains(c.as_str()), "{c} is in the {what} in Vault");
        }
    };
    let prefix = format!("secret/data/castle/{cluster}/state");
    let journal = vault
        .read(&format!("{prefix}/journal"))
        .await
        .unwrap()
        .unwrap();
    audit("journal", &journal);

    std::fs::remove_file(&file).unwrap();
    assert!(matches!(
        shared.state_pull(false).await.unwrap(),
        Transferred::Copied { .. }
    ));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        original,
        "pull wrote back the very bytes push took"
    );

    // A run with the state in Vault: the journal there moves on, the file does not.
    let resumed = shared
        .create(RunOptions {
            resume: true,
            ..RunOptions::default()
        })
        .await
        .unwrap();
    assert!(resumed.error.is_none());
    for key in ["journal", "lock"] {
        let value = vault
            .read(&format!("{prefix}/{key}"))
            .await
            .unwrap()
            .unwrap();
        audit(key, &value);
    }
    let refused = shared.state_push(false).await.unwrap_err().to_string();
    assert!(
        refused.contains("is not older") && refused.contains("--force"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        original,
        "push refused: file kept"
    );
    assert!(matches!(
        shared.state_pull(false).await.unwrap(),
        Transferred::Copied { .. }
    ));
    let pulled = Journal::peek(dir.path()).unwrap();
    assert_eq!(
        pulled.last_run,
        Some(
            resumed
                .run_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        )
    );
}

/// A TCP proxy in front of OpenBao that the test can cut and restore: Vault
/// unreachable mid-run without stopping the server other tests share.
struct Proxy {
    port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            target: target.to_string(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Refuses new connections and drops the open ones.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

/// Vault unreachable mid-run: the run stops at its next journal write, every step
/// done so far recorded on this machine, and says how to resume; once Vault
/// answers again, `--resume` writes that journal back and finishes without
/// redoing what was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_unreachable_mid_run_stops_at_the_next_write_and_resume_finishes() {
    let Some((addr, token)) = openbao() else {
        return;
    };
    let target = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(&target).await;
    let cluster = unique("cut");
    let (dir, config) = lab_copy(|t| {
        t.replace("time_scale = 0.02", "time_scale = 0.01")
            .replacen("name = \"lab\"", &format!("name = \"{cluster}\""), 1)
            + &format!(
                "\n[state]\nbackend = \"vault\"\naddress = \"http://127.0.0.1:{}\"\ntoken = {{ env = \"VAULT_TOKEN\" }}\n",
                proxy.port
            )
    });
    let castle = Arc::new(Castle::open(&config).unwrap());
    let run = {
        let castle = Arc::clone(&castle);
        tokio::spawn(async move { castle.create(RunOptions::default()).await })
    };
    // Cut Vault off once `platform` is done in the journal it holds.
    until_platform_is_done(&client(&addr, &token), &cluster).await;
    proxy.cut();
    let stopped = run.await.unwrap();
    let err = stopped.expect_err("the run stops at its next journal write");
    let message = err.to_string();
    eprintln!("the cut run: {message}");
    assert!(
        matches!(&err, castle_core::Error::Journal(j) if j.stopped_a_run()),
        "{message}"
    );
    assert!(
        message.contains("state.kept.json") && message.contains("--resume"),
        "{message}"
    );
    let kept = dir.path().join(".castle/state.kept.json");
    let kept_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept).unwrap()).unwrap();
    let kept_journal =
        JournalState::from_text(kept_json["journal"].as_str().unwrap(), Path::new("kept")).unwrap();
    assert!(
        kept_journal.outputs("platform").is_some(),
        "the steps done so far are recorded locally"
    );
    // While Vault is away, a resume stops at once and keeps the file.
    let early = castle
        .create(RunOptions {
            resume: true,
            ..RunOptions::default()
        })
        .await
        .expect_err("Vault is still unreachable");
    assert!(kept.exists(), "{early}");

    proxy.restore().await;
    let rec = resume_writes_back_and_finishes(&castle, &kept).await;
    let skipped = skipped(&rec);
    for step in ["platform", "vault-db"] {
        assert!(
            skipped.iter().any(|s| s == step) || kept_journal.outputs(step).is_none(),
            "{step} was done before the cut and ran again: skipped {skipped:?}"
        );
    }
    assert!(skipped.iter().any(|s| s == "platform"), "{skipped:?}");
    let state = castle.state_backend().unwrap();
    assert!(state.holder().await.unwrap().is_none(), "released");
}

/// An OpenBao of this test's own, with raft storage on disk (OpenBao 2 has no
/// `file` storage), initialised and unsealed here, so that it can be stopped and
/// started again without touching the server other tests share.
struct OwnOpenBao {
    bin: String,
    dir: tempfile::TempDir,
    addr: String,
    key: String,
    token: String,
    server: std::process::Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OwnOpenBao {
    /// `None` (skipped) without the `bao` binary the test command installs.
    fn start() -> Option<Self> {
        let Ok(bin) = std::env::var("CASTLE_TEST_BAO") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but CASTLE_TEST_BAO is not: scripts/test.sh installs OpenBao"
            );
            eprintln!("SKIPPED: no bao binary (source target/services.env)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let (api, cluster) = (free_port(), free_port());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            dir.path().join("config.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"castle-test\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                data.display()
            ),
        )
        .unwrap();
        let addr = format!("http://127.0.0.1:{api}");
        let server = Self::spawn(&bin, dir.path());
        let mut bao = Self {
            bin,
            dir,
            addr,
            key: String::new(),
            token: String::new(),
            server,
        };
        let init: serde_json::Value = serde_json::from_slice(&bao.retry(
            "init",
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        ))
        .unwrap();
        bao.key = init["unseal_keys_b64"][0].as_str().unwrap().to_string();
        bao.token = init["root_token"].as_str().unwrap().to_string();
        bao.unseal();
        bao.retry(
            "enable kv-v2",
            &["secrets", "enable", "-path=secret", "kv-v2"],
        );
        // A new KV v2 mount upgrades itself for a moment before it serves.
        bao.retry("kv-v2 ready", &["kv", "put", "secret/ready", "ok=1"]);
        Some(bao)
    }

    fn spawn(bin: &str, dir: &Path) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        std::process::Command::new(bin)
            .arg("server")
            .arg(format!("-config={}", dir.join("config.hcl").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs `bao ARGS` until it succeeds (the server starts, elects itself).
    fn retry(&self, what: &str, args: &[&str]) -> Vec<u8> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::process::Command::new(&self.bin)
                .args(args)
                .env("BAO_ADDR", &self.addr)
                .env("BAO_TOKEN", &self.token)
                .output()
                .unwrap();
            if out.status.success() {
                return out.stdout;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn unseal(&self) {
        self.retry("unseal", &["operator", "unseal", &self.key]);
        // Active once it answers a read with the root token.
        self.retry("active", &["read", "sys/mounts"]);
    }

    fn stop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }

    fn restart(&mut self) {
        self.server = Self::spawn(&self.bin, self.dir.path());
        self.unseal();
    }
}

impl Drop for OwnOpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// OpenBao stopped mid-run (killed; its storage on disk): the run stops cleanly at
/// its next journal write, every step done so far kept on this machine; after
/// OpenBao is started and unsealed again, `--resume` writes that journal back and
/// finishes without redoing what was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_mid_run_then_back_and_resume_finishes() {
    let Some(mut bao) = tokio::task::spawn_blocking(OwnOpenBao::start)
        .await
        .unwrap()
    else {
        return;
    };
    let cluster = unique("stop");
    let (dir, config) = lab_copy(|t| {
        t.replace("time_scale = 0.02", "time_scale = 0.01")
            .replacen("name = \"lab\"", &format!("name = \"{cluster}\""), 1)
            + &format!(
                "\n[state]\nbackend = \"vault\"\naddress = \"{}\"\ntoken = {{ file = \"state-token\" }}\n",
                bao.addr
            )
    });
    std::fs::write(dir.path().join("secrets/state-token"), &bao.token).unwrap();
    let castle = Arc::new(Castle::open(&config).unwrap());
    let run = {
        let castle = Arc::clone(&castle);
        tokio::spawn(async move { castle.create(RunOptions::default()).await })
    };
    let vault = client(&bao.addr, &SecretString::from(bao.token.clone()));
    until_platform_is_done(&vault, &cluster).await;
    bao.stop();
    let err = run
        .await
        .unwrap()
        .expect_err("the run stops at its next journal write");
    let message = err.to_string();
    eprintln!("OpenBao stopped: {message}");
    assert!(
        matches!(&err, castle_core::Error::Journal(j) if j.stopped_a_run()),
        "{message}"
    );
    let kept = dir.path().join(".castle/state.kept.json");
    assert!(kept.exists(), "{message}");

    let mut bao = tokio::task::spawn_blocking(move || {
        bao.restart();
        bao
    })
    .await
    .unwrap();
    let rec = resume_writes_back_and_finishes(&castle, &kept).await;
    assert!(
        skipped(&rec).iter().any(|s| s == "platform"),
        "{:?}",
        skipped(&rec)
    );
    let stored = Journal::peek_in(castle.state_backend().unwrap().as_ref())
        .await
        .unwrap();
    assert_eq!(stored.steps.len(), castle.step_ids().unwrap().len());
    tokio::task::spawn_blocking(move || bao.stop())
        .await
        .unwrap();
}
