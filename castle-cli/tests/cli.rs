//! The `castle` binary end to end: help, validation errors, and the lab flow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn castle(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("castle runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lab() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    for sub in ["", "secrets", "manifests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let config = dir.path().join("castle.toml");
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replace("time_scale = 0.02", "time_scale = 0.002");
    std::fs::write(&config, t).unwrap();
    (dir, config)
}

#[test]
fn help_matches_the_golden_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_castle"))
        .arg("--help")
        .output()
        .unwrap();
    let golden =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help.txt"))
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden,
        "update castle-cli/tests/help.txt if the change is intended"
    );
}

#[test]
fn a_malformed_config_exits_2_naming_file_line_column_and_key() {
    let (dir, config) = lab();
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replacen("vmid = 422", "vmid = 421", 1);
    std::fs::write(&config, t).unwrap();
    let out = castle(&["validate"], &config);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out);
    assert!(
        err.contains("castle.toml:")
            && err.contains("nodes[1].vmid")
            && err.contains("already used"),
        "{err}"
    );
    let missing = castle(&["validate"], &dir.path().join("nope.toml"));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_lab_flow_create_resume_report_destroy_status() {
    let (dir, config) = lab();
    let canaries: Vec<String> = std::fs::read_dir(dir.path().join("secrets"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let v = format!("canary-cli-{}", p.file_name().unwrap().to_string_lossy());
            std::fs::write(&p, &v).unwrap();
            v
        })
        .collect();
    let created = castle(&["create"], &config);
    let out = text(&created);
    assert_eq!(created.status.code(), Some(0), "{out}");
    assert!(
        out.contains("critical path") && out.contains("verify"),
        "{out}"
    );
    assert!(dir.path().join(".castle/state.json").exists());

    let resumed = castle(&["create", "--resume"], &config);
    assert_eq!(resumed.status.code(), Some(0));
    assert!(
        text(&resumed).contains("nothing to do"),
        "{}",
        text(&resumed)
    );

    let report = castle(&["report"], &config);
    assert_eq!(report.status.code(), Some(0));
    assert!(text(&report).contains("timeline.svg"));

    let plan = castle(&["plan", "--json"], &config);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 11);

    let destroyed = castle(&["destroy"], &config);
    assert_eq!(destroyed.status.code(), Some(0), "{}", text(&destroyed));
    let status = castle(&["status"], &config);
    assert!(text(&status).contains("nothing left"), "{}", text(&status));

    for o in [&created, &resumed, &report, &destroyed, &status] {
        for c in &canaries {
            assert!(!text(o).contains(c.as_str()), "{c} printed");
        }
    }
}

#[test]
fn a_second_run_on_a_locked_cluster_is_refused() {
    let (dir, config) = lab();
    std::fs::create_dir_all(dir.path().join(".castle")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(".castle/lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = castle(&["create"], &config);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("another castle run"), "{}", text(&out));
}

#[test]
fn validate_names_the_privileges_and_scopes_the_credentials_need() {
    let (_dir, config) = lab();
    let out = castle(&["validate"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("/vms/9000: VM.Audit, VM.Clone") && t.contains("VM.Allocate"),
        "{t}"
    );
    assert!(t.contains("scopes auth_keys, devices:core"), "{t}");
    let pooled = std::fs::read_to_string(&config).unwrap().replace(
        "clone_concurrency = 2\n",
        "clone_concurrency = 2\npool = \"castle\"\n",
    );
    std::fs::write(&config, pooled).unwrap();
    let t = text(&castle(&["validate"], &config));
    assert!(t.contains("/pool/castle: VM.Allocate"), "{t}");
}
