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
    for sub in ["", "secrets", "manifests", "charts"] {
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
    // The report names the HelmReleases Flux installed, with chart and version.
    assert!(
        text(&report).contains(
            "HelmRelease metallb-system/metallb Ready: metallb 0.15.2 from https://metallb.github.io/metallb"
        ),
        "{}",
        text(&report)
    );

    let plan = castle(&["plan", "--json"], &config);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    // Fifteen steps, and each of the three nodes' platform, talos and join units.
    assert_eq!(v["steps"].as_array().unwrap().len(), 15 + 3 * 3);

    let destroyed = castle(&["destroy"], &config);
    assert_eq!(destroyed.status.code(), Some(0), "{}", text(&destroyed));
    assert!(
        text(&destroyed)
            .contains("nothing of cluster lab is left on Proxmox, the tailnet or Vault"),
        "destroy's last line comes from the systems: {}",
        text(&destroyed)
    );
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
    // Every command that changes anything takes the same lock.
    for args in [
        &["create"][..],
        &["vault", "apply"],
        &["tailscale", "mint-key"],
    ] {
        let out = castle(args, &config);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("another castle run"), "{}", text(&out));
        assert!(
            text(&out).contains("frees itself") && !text(&out).contains("remove the lock"),
            "an flock needs no deleting: {}",
            text(&out)
        );
    }
}

/// `castle talos render --out DIR`: one 0600 file per node, each a config that
/// Talos's own rules accept, the NIC selected by MAC, the default route without
/// a destination, one issuer as Talos 1.12 takes it.
#[test]
fn talos_render_writes_one_valid_private_config_per_node() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, config) = lab();
    let out_dir = dir.path().join("rendered");
    let out = castle(
        &[
            "talos",
            "render",
            "--json",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &config,
    );
    assert!(out.status.success(), "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = listed["written"].as_array().unwrap();
    assert_eq!(written.len(), 3, "{listed}");
    assert!(text(&out).contains("hold the cluster's secrets"));
    for w in written {
        let path = PathBuf::from(w["path"].as_str().unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let yaml = std::fs::read_to_string(&path).unwrap();
        castle_talos::validate_stream(&yaml).unwrap();
        assert!(!yaml.contains("0.0.0.0/0"), "{}", path.display());
        assert!(yaml.contains("mac(link.permanent_addr) == \"02:"), "{yaml}");
        if w["role"] == "controlplane" {
            assert!(yaml.contains("kind: Layer2VIPConfig"));
            assert!(
                yaml.contains("service-account-issuer: \"https://192.168.1.210:6443\"")
                    || yaml.contains("service-account-issuer: https://192.168.1.210:6443"),
                "{yaml}"
            );
        } else {
            assert!(!yaml.contains("kind: Layer2VIPConfig"), "no VIP on workers");
        }
    }
    let one = castle(&["talos", "render", "--node", "worker-2"], &config);
    assert!(one.status.success(), "{}", text(&one));
    assert!(String::from_utf8_lossy(&one.stdout).contains("hostname: worker-2"));
    let none = castle(&["talos", "render", "--node", "nope"], &config);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(text(&none).contains("no node named \"nope\""));
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
        "clone_concurrency = 8\n",
        "clone_concurrency = 8\npool = \"castle\"\n",
    );
    std::fs::write(&config, pooled).unwrap();
    let t = text(&castle(&["validate"], &config));
    assert!(t.contains("/pool/castle: VM.Allocate"), "{t}");
}

#[test]
fn an_error_is_printed_once_and_as_json_with_json() {
    let (_dir, config) = lab();
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replacen("vmid = 422", "vmid = 421", 1);
    std::fs::write(&config, t).unwrap();
    let out = castle(&["validate"], &config);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("already used").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = castle(&["validate", "--json"], &config);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout is for results");
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["error"]["kind"], "config");
    assert_eq!(v["error"]["exit_code"], 2);
    let issue = &v["error"]["issues"][0];
    assert_eq!(issue["key"], "nodes[1].vmid");
    assert_eq!(
        (issue["line"].as_u64(), issue["column"].as_u64()),
        (Some(51), Some(8))
    );
    assert!(issue["file"].as_str().unwrap().ends_with("castle.toml"));

    let out = castle(&["no-such-command", "--json"], &config);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["error"]["kind"], "usage");

    let out = castle(&["report", "--json"], &config.with_file_name("absent.toml"));
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["error"]["kind"], "config");
}

/// A refusal from Vault is a failed step (exit 1), not bad usage (exit 2).
#[test]
fn a_vault_400_from_vault_apply_exits_1() {
    let (_dir, config) = lab();
    let t = std::fs::read_to_string(&config).unwrap().replacen(
        "policies.external-secrets = ",
        "policies.root = 'path \"secret/*\" { capabilities = [\"read\"] }'\npolicies.external-secrets = ",
        1,
    );
    std::fs::write(&config, t).unwrap();
    assert_eq!(castle(&["validate"], &config).status.code(), Some(0));
    let out = castle(&["vault", "apply"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot update").count(), 1, "{err}");
    let out = castle(&["vault", "apply", "--json"], &config);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["error"]["kind"], "step_failed");
}

/// A context that names what its cause names already is said once.
#[test]
fn a_write_error_names_the_file_once() {
    let (_dir, config) = lab();
    let out = castle(
        &["talos", "render", "--out", "/proc/castle-no-such-dir"],
        &config,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cp-1.yaml").count(), 1, "{err}");
}

/// `castle status | head -1`: a reader that goes away is no reason to panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let (_dir, config) = lab();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(["validate", "--config"])
        .arg(&config)
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

fn doctor_json(config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = castle(&["--json", "doctor"], config);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.code(), v)
}

/// `castle doctor` on the lab: every check passes, and neither the journal nor the
/// lab's world changes by a byte (no probe writes anything).
#[test]
fn doctor_passes_every_check_on_the_lab_and_writes_nothing() {
    let (dir, config) = lab();
    let out = castle(&["doctor"], &config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(" 0 warnings, 0 failed"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join(".castle").exists(), "doctor wrote state");
    let created = castle(&["create"], &config);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created));
    let files = [".castle/state.json", ".castle/lab/state.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    let (code, report) = doctor_json(&config);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let findings = report["findings"].as_array().unwrap();
    let systems: std::collections::BTreeSet<&str> = findings
        .iter()
        .map(|f| f["system"].as_str().unwrap())
        .collect();
    for s in ["network", "talos", "proxmox", "tailscale", "vault", "git"] {
        assert!(systems.contains(s), "{systems:?}");
    }
    assert!(findings.iter().all(|f| f["status"] == "pass"), "{report:#}");
    for (f, bytes) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(dir.path().join(f)).unwrap(),
            bytes,
            "{f} changed"
        );
    }
}

/// Each failure `[lab] inject` can show makes doctor fail (exit 1) with a finding
/// that names it and says what to do.
#[test]
fn doctor_names_each_injected_failure_and_exits_one() {
    let cases = [
        (
            "proxmox-missing-privilege",
            "proxmox",
            "privileges on /vms/9000",
        ),
        ("proxmox-missing-template", "proxmox", "template 9000"),
        ("proxmox-node-offline", "proxmox", "node pve online"),
        ("proxmox-storage-full", "proxmox", "storage local-lvm"),
        ("tailscale-narrow-scopes", "tailscale", "scope auth_keys"),
        ("vault-sealed", "vault", "unsealed"),
        (
            "vault-missing-capability",
            "vault",
            "sudo on sys/leases/revoke-prefix",
        ),
        ("vault-short-token", "vault", "token valid"),
        ("git-missing-branch", "git", "branch main"),
        ("git-token-refused", "git", "repository answers the token"),
    ];
    let (_dir, config) = lab();
    let original = std::fs::read_to_string(&config).unwrap();
    for (fault, system, check) in cases {
        std::fs::write(
            &config,
            original.replace("[lab]\n", &format!("[lab]\ninject = [\"{fault}\"]\n")),
        )
        .unwrap();
        let (code, report) = doctor_json(&config);
        assert_eq!(code, Some(1), "{fault}: {report:#}");
        let failed: Vec<&serde_json::Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == "fail")
            .collect();
        assert!(
            failed.iter().any(|f| f["system"] == system
                && f["check"].as_str().unwrap().contains(check)
                && f["fix"].as_str().is_some_and(|x| !x.is_empty())),
            "{fault}: {failed:#?}"
        );
    }
}

/// `castle completions SHELL` and `castle man` come from clap's own generators and
/// name every subcommand.
#[test]
fn completions_and_the_man_page_name_every_command() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_castle"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {script}");
        for cmd in ["doctor", "plan", "create", "destroy"] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH castle 1"),
        "{man}"
    );
    assert!(man.contains("doctor"));
}

/// The starter `castle init` writes validates as it is (its one secret given, as
/// its next steps say, here through the environment fallback); the directory keeps
/// secrets out of git; a second init refuses and changes nothing.
#[test]
fn init_writes_a_starter_that_validates_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("newc");
    let init = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_castle"))
            .arg("init")
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = init(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("proxmox-token"), "{}", text(&out));
    let config = dir.join("castle.toml");
    let run = |command: &str, env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_castle"));
        cmd.arg(command).arg("--config").arg(&config);
        cmd.env_remove("PROXMOX_TOKEN");
        if let Some(token) = env {
            cmd.env("PROXMOX_TOKEN", token);
        }
        cmd.output().unwrap()
    };
    // The starter as written, before any credential is in place: the file is valid,
    // and the one secret not provided yet is named, with where it goes.
    let out = run("validate", None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains(": valid ("), "{shown}");
    let absent: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("not found: looked for"))
        .collect();
    assert_eq!(absent.len(), 1, "{shown}");
    assert!(
        absent[0].contains("proxmox.token") && absent[0].contains("secrets/proxmox-token"),
        "{shown}"
    );
    assert!(shown.contains("create, plan and doctor need it"), "{shown}");
    let out = Command::new(env!("CARGO_BIN_EXE_castle"))
        .args(["validate", "--json", "--config"])
        .arg(&config)
        .env_remove("PROXMOX_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["absent_secrets"][0]["key"], "proxmox.token", "{v}");
    assert_eq!(v["absent_secrets"].as_array().map(Vec::len), Some(1), "{v}");
    // What acts on the machine still requires it, before it asks anything.
    for command in ["doctor", "plan", "create"] {
        let out = run(command, None);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
        let complaint = text(&out);
        assert_eq!(complaint.lines().count(), 1, "{command}: {complaint}");
        assert!(
            complaint.contains("proxmox.token") && complaint.contains("secrets/proxmox-token"),
            "{command}: {complaint}"
        );
    }
    assert!(!dir.join(".castle").exists(), "nothing was started");
    // Given the credential, nothing is left to name.
    let out = run("validate", Some("a-token-secret"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("not found"), "{}", text(&out));

    let ignored = std::fs::read_to_string(dir.join(".gitignore")).unwrap();
    for entry in ["/secrets/", "/configs/", "/.castle/"] {
        assert!(ignored.lines().any(|l| l == entry), "{entry}: {ignored}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("secrets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    std::fs::write(&config, "# mine\n").unwrap();
    let out = init(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let refusal = text(&out);
    assert!(
        refusal.contains("castle.toml exists already") && refusal.contains("never overwrites"),
        "{refusal}"
    );
    assert!(!refusal.contains("step graph"), "{refusal}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
}
