//! Two `castle create` processes, from two directories, sharing one cluster's state
//! in the real OpenBao of the test command (`[state] backend = "vault"`): the
//! second is refused while the first runs, naming it; once the first is killed
//! and its lease expires, the second takes over and `--resume` finishes without
//! redoing what the first did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn openbao() -> Option<(String, String)> {
    match (std::env::var("VAULT_ADDR"), std::env::var("VAULT_TOKEN")) {
        (Ok(a), Ok(t)) => Some((a, t)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but VAULT_ADDR/VAULT_TOKEN are not: scripts/test.sh starts OpenBao"
            );
            eprintln!(
                "SKIPPED: no OpenBao (run scripts/services.sh and source target/services.env)"
            );
            None
        }
    }
}

/// A copy of the lab in `dir`, named `cluster`, its state in OpenBao under a
/// three-second lease.
fn lab(dir: &Path, cluster: &str, addr: &str) -> PathBuf {
    let config = common::copy_lab(dir);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "name = \"lab\"",
        &format!("name = \"{cluster}\""),
        1,
    );
    std::fs::write(
        &config,
        format!(
            "{text}\n[state]\nbackend = \"vault\"\naddress = \"{addr}\"\ntoken = {{ env = \"VAULT_TOKEN\" }}\nlease_seconds = 3\n"
        ),
    )
    .unwrap();
    config
}

fn castle(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = castle(config, &all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits for `what` to hold, asking every 50 ms for at most `within`.
fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The steps of the newest run in `dir` that were skipped, and those started.
fn newest_run(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir.join(".castle/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    let log = std::fs::read_to_string(runs.last().unwrap().join("events.jsonl")).unwrap();
    let (mut skipped, mut started) = (Vec::new(), Vec::new());
    for line in log.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = e["step"].as_str().unwrap_or_default().to_string();
        match e["event"].as_str() {
            Some("step_skipped") => skipped.push(step),
            Some("step_started") => started.push(step),
            _ => {}
        }
    }
    (skipped, started)
}

#[test]
fn a_second_process_is_refused_while_the_first_runs_then_takes_over_its_expired_lease() {
    let Some((addr, _token)) = openbao() else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let cluster = format!("two{:x}", nanos % 0x0fff_ffff);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config_a, config_b) = (
        lab(a.path(), &cluster, &addr),
        lab(b.path(), &cluster, &addr),
    );
    // The lab's simulated Proxmox, Talos and tailnet stand for systems both
    // machines reach: one world, seen from both directories. The journal and the
    // lock are shared only through OpenBao.
    std::fs::create_dir_all(a.path().join(".castle/lab")).unwrap();
    std::fs::create_dir_all(b.path().join(".castle")).unwrap();
    std::os::unix::fs::symlink(a.path().join(".castle/lab"), b.path().join(".castle/lab")).unwrap();

    let mut first = Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(["create", "--config"])
        .arg(&config_a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = first.id();
    wait_for("the first run's lease", Duration::from_secs(30), || {
        json(&config_b, &["state", "show"])["holder"]["pid"] == pid
    });

    let refused = castle(&config_b, &["create"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("locked by `castle create` (pid {pid} on")),
        "the holder is named: {said}"
    );

    wait_for(
        "`platform` done in the shared journal",
        Duration::from_secs(60),
        || {
            json(&config_b, &["status"])["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == "platform" && s["status"] == "done")
        },
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let status = json(&config_b, &["status"]);
    let done_by_first: Vec<String> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "done")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();

    // Killed, its lease lives on until it expires: still refused.
    let early = castle(&config_b, &["create", "--resume"]);
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    let expires = json(&config_b, &["state", "show"])["holder"]["expires_unix"]
        .as_u64()
        .unwrap();
    wait_for("the lease to expire", Duration::from_secs(10), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > expires
    });

    let resumed = castle(&config_b, &["create", "--resume"]);
    let said = text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "took over the expired lease of `castle create` (pid {pid} on"
        )),
        "the takeover is said: {said}"
    );
    let (skipped, started) = newest_run(b.path());
    // Steps that hand their results on only in memory run again by design; every
    // step the first run finished whose results the journal holds is skipped.
    let in_memory = ["secrets", "tailnet-key", "vault-jwt", "talos"];
    for step in done_by_first
        .iter()
        .filter(|s| !in_memory.contains(&s.as_str()))
    {
        assert!(
            skipped.contains(step) && !started.contains(step),
            "{step} was done by the first run and ran again: skipped {skipped:?}, started {started:?}"
        );
    }
    assert!(
        done_by_first.iter().any(|s| s == "platform"),
        "{done_by_first:?}"
    );
    eprintln!(
        "first run (pid {pid}) finished {done_by_first:?} before SIGKILL; the second skipped {skipped:?}"
    );
    let again = castle(&config_b, &["create", "--resume"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "{}",
        text(&again)
    );
    assert!(json(&config_b, &["state", "show"])["holder"].is_null());
}
