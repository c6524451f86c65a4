//! castle.toml loading and validation, and secret resolution, through the public API.
//!
//! Every file in `tests/fixtures/` is a small castle.toml with one defect; its first
//! line says where the error must point and what it must say:
//! `# expect: LINE:COLUMN KEY | words of the message`. Files they refer to (secrets,
//! manifests, policies, patches) sit in the folders beside them.

use std::path::{Path, PathBuf};

use castle_core::config::{Config, Role, template};
use castle_core::secrets::{SecretError, SecretRef, Secrets};
use secrecy::ExposeSecret as _;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_path() -> PathBuf {
    crate_dir().join("../examples/lab/castle.toml")
}

struct Expect {
    line: usize,
    column: usize,
    key: String,
    words: String,
}

fn expectation(path: &Path, text: &str) -> Expect {
    let parse = || {
        let rest = text.lines().next()?.strip_prefix("# expect: ")?;
        let (place, rest) = rest.split_once(' ')?;
        let (key, words) = rest.split_once(" | ")?;
        let (line, column) = place.split_once(':')?;
        Some(Expect {
            line: line.parse().ok()?,
            column: column.parse().ok()?,
            key: key.to_string(),
            words: words.to_string(),
        })
    };
    parse().unwrap_or_else(|| {
        panic!(
            "{}: first line is not `# expect: L:C KEY | words`",
            path.display()
        )
    })
}

#[test]
fn every_malformed_fixture_is_refused_at_its_line_column_and_key() {
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(crate_dir().join("tests/fixtures"))
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 100, "only {} fixtures", fixtures.len());
    let mut failures = Vec::new();
    for path in &fixtures {
        // Some fixtures are not UTF-8 on purpose; their first line is.
        let bytes = std::fs::read(path).expect("readable fixture");
        let want = expectation(path, &String::from_utf8_lossy(&bytes));
        let err = match Config::load(path) {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", path.display()));
                continue;
            }
            Err(e) => e,
        };
        let shown = path.display().to_string();
        let prefix = format!("{shown}:{}:{}: {}: ", want.line, want.column, want.key);
        let rendered = err.to_string();
        let ok = err.issues.len() == 1
            && err.issues[0].file == shown
            && (err.issues[0].line, err.issues[0].column) == (want.line, want.column)
            && err.issues[0].key == want.key
            && err.issues[0].message.contains(&want.words)
            && rendered.starts_with(&prefix);
        // `castle validate` checks the file, not the machine: a secret whose file
        // or variable is absent is set aside, located; every other defect still fails.
        let absent_only = want.words.contains("not found: looked for");
        match (Config::load_allowing_absent_secrets(path), absent_only) {
            (Ok((_, absent)), true) if absent == err.issues => {}
            (Err(e), false) if e == err => {}
            (got, _) => failures.push(format!(
                "{}: allowing absent secrets, {} expected, got {:?}",
                path.display(),
                if absent_only {
                    "a config and the one absent secret"
                } else {
                    "the same refusal"
                },
                got.map(|(_, absent)| absent)
            )),
        }
        if !ok {
            failures.push(format!(
                "{}:\n  want {}:{} {} | {}\n  got  {rendered}",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                want.line,
                want.column,
                want.key,
                want.words
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_lab_config_loads_and_validates() {
    let lab = Config::load(&lab_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.cluster.name, "lab");
    assert_eq!(lab.nodes.len(), 3);
    assert_eq!(lab.control_planes().count(), 1);
    assert!(lab.nodes.iter().skip(1).all(|n| n.role == Role::Worker));
    assert_eq!(lab.proxmox.vmid_range, [420, 429]);
    assert_eq!(lab.proxmox.template_vmid, 9000);
    assert_eq!(lab.hostname("worker-1"), "lab-worker-1");
    assert_eq!(lab.base_dir(), lab_path().parent().expect("has a parent"));
    let vault = lab.vault.as_ref().expect("the lab has [vault]");
    assert!(vault.spec.check().is_ok());
    assert_eq!(vault.spec.database.len(), 1);
    let lab_section = lab.lab.as_ref().expect("the lab has [lab]");
    assert_eq!((lab_section.time_scale, lab_section.seed), (0.02, 7));
    assert_eq!(lab.kubernetes.coredns.forwards[0].zone, "ts.net");
    // ESO, MetalLB and Longhorn from charts; Flux from its pinned release file.
    for (name, chart) in [
        ("eso", "external-secrets"),
        ("metallb", "metallb"),
        ("longhorn", "longhorn"),
    ] {
        let release = lab.release(name).expect("a chart");
        assert_eq!(release.chart.name, chart);
    }
    let flux = lab.components.flux.as_ref().expect("flux");
    assert_eq!(flux.manifest.as_deref(), Some("manifests/flux.yaml"));
    assert!(flux.sha256.is_some());
    // The catalogue the lab's Helm repositories serve reads, with every chart the
    // config names at its version.
    let charts = lab.lab_charts().unwrap_or_else(|e| panic!("{e}"));
    for name in ["eso", "metallb", "longhorn"] {
        let r = lab.release(name).expect("a chart");
        assert!(
            charts.iter().any(|c| c.repo == r.chart.repo
                && c.name == r.chart.name
                && Some(&c.version) == r.chart.version.as_ref()
                && !c.objects.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn state_defaults_to_files_and_a_vault_backend_takes_its_mount_path_and_lease() {
    use castle_core::config::StateBackendKind;
    let lab = Config::load(&lab_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lab.state.backend, StateBackendKind::File);
    let text = std::fs::read_to_string(lab_path()).expect("lab config");
    let base = lab_path().parent().expect("has a parent").to_path_buf();
    let shared = Config::from_str(
        &format!("{text}\n[state]\nbackend = \"vault\"\n"),
        "castle.toml",
        &base,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shared.state.backend, StateBackendKind::Vault);
    assert_eq!(shared.state.mount(), "secret");
    assert_eq!(shared.state.path("lab"), "castle/lab/state");
    assert_eq!(shared.state.lease().as_secs(), 60);
    let own = Config::from_str(
        &format!(
            "{text}\n[state]\nbackend = \"vault\"\naddress = \"http://127.0.0.1:8200\"\ntoken = {{ file = \"vault-token\" }}\nmount = \"kv\"\npath = \"teams/infra/lab\"\nlease_seconds = 3\n"
        ),
        "castle.toml",
        &base,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(own.state.address.as_deref(), Some("http://127.0.0.1:8200"));
    assert_eq!(
        (own.state.mount(), own.state.path("lab").as_str()),
        ("kv", "teams/infra/lab")
    );
    assert_eq!(own.state.lease().as_secs(), 3);
}

#[test]
fn every_secret_the_lab_refers_to_resolves_to_an_obviously_fake_value() {
    let lab = Config::load(&lab_path()).unwrap_or_else(|e| panic!("{e}"));
    let secrets = lab.secrets();
    let vault = lab.vault.as_ref().expect("the lab has [vault]");
    let mut refs = vec![&lab.proxmox.token, &vault.token];
    refs.extend(
        vault
            .spec
            .database
            .iter()
            .flat_map(|d| d.connections.values().map(|c| &c.password)),
    );
    refs.extend(
        lab.kubernetes
            .secrets
            .iter()
            .flat_map(|s| s.refs().into_iter().map(|(_, r)| r)),
    );
    // Generated passwords live in Vault, not in the secrets directory.
    let (generated, files): (Vec<_>, Vec<_>) =
        refs.into_iter().partition(|r| r.generated().is_some());
    assert!(
        !generated.is_empty(),
        "the lab shows `{{ vault = ... }}` refs"
    );
    for r in generated {
        assert!(
            matches!(secrets.resolve(r), Err(SecretError::InVault { .. })),
            "{r}"
        );
    }
    for r in files {
        let value = secrets.resolve(r).unwrap_or_else(|e| panic!("{e}"));
        assert!(value.expose_secret().ends_with("-not-real"), "{r}");
    }
}

/// A cluster directory holding the one secret the starter template refers to.
fn starter_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("secrets")).expect("mkdir");
    std::fs::write(dir.path().join("secrets/proxmox-token"), "not-real").expect("write");
    dir
}

#[test]
fn the_starter_template_loads_and_validates() {
    let dir = starter_dir();
    for name in ["prod", "edge-2"] {
        let text = template::starter(name);
        let config =
            Config::from_str(&text, "castle.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.cluster.name, name);
        assert!(config.control_planes().count() >= 1);
        assert!(
            text.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .count()
                > 5,
            "it explains itself"
        );
    }
}

#[test]
fn validation_collects_every_issue_in_file_order() {
    let text = std::fs::read_to_string(lab_path())
        .expect("lab config")
        .replacen("tags = [\"tag:lab-k8s\"]", "tags = [\"lab-k8s\"]", 1)
        .replacen("vmid = 422", "vmid = 421", 1)
        .replacen("time_scale = 0.02", "time_scale = -1.0", 1);
    let dir = lab_path().parent().expect("has a parent").to_path_buf();
    let err = Config::from_str(&text, "lab.toml", &dir).expect_err("three defects");
    let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        ["nodes[1].vmid", "tailscale.tags[0]", "lab.time_scale"],
        "{err}"
    );
    assert_eq!(err.to_string().lines().count(), 3);
    assert!(err.to_string().lines().all(|l| l.starts_with("lab.toml:")));
}

#[test]
fn validate_rechecks_a_config_changed_in_code() {
    let mut lab = Config::load(&lab_path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.validate().is_ok());
    lab.nodes[2].vmid = 421;
    let err = lab.validate().expect_err("duplicate vmid");
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].key, "nodes[2].vmid");
    assert!(
        err.issues[0]
            .message
            .contains("already used by nodes[0] (cp-1)"),
        "{err}"
    );
}

#[test]
fn relative_paths_are_anchored_to_the_cluster_directory() {
    let dir = starter_dir();
    let text = template::starter("prod");
    let config =
        Config::from_str(&text, "castle.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.base_dir(), dir.path());
    assert_eq!(
        config.path("manifests/x.yaml"),
        dir.path().join("manifests/x.yaml")
    );
    assert_eq!(config.secrets().dir(), dir.path().join("secrets"));
}

#[test]
fn a_missing_file_is_one_issue_that_says_what_to_do() {
    let err = Config::load(Path::new("/nonexistent/castle.toml")).expect_err("no such file");
    assert_eq!(err.issues.len(), 1);
    let text = err.to_string();
    assert!(text.starts_with("/nonexistent/castle.toml:1:1: "), "{text}");
    assert!(text.contains("castle init"), "{text}");
}

/// One source of truth: a `{ vault = ... }` ref names a password of
/// `[[vault.spec.generated]]`; a misspelt one is refused where it is written, in
/// every place that takes one, before anything is created.
#[test]
fn a_vault_ref_to_an_unknown_generated_password_is_refused_where_it_is_written() {
    let lab = std::fs::read_to_string(lab_path()).expect("lab config");
    let dir = lab_path().parent().expect("lab dir").to_path_buf();
    assert_eq!(lab.matches("{ vault = \"tazlab-admin\" }").count(), 2);
    let text = lab.replace(
        "{ vault = \"tazlab-admin\" }",
        "{ vault = \"tazlab-admn\" }",
    );
    let err = Config::from_str(&text, "castle.toml", &dir).expect_err("unknown generated value");
    let keys: Vec<&str> = err.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "vault.spec.database[0].connections.tazlab-db.password",
            "kubernetes.secrets[1].data.password"
        ],
        "{err}"
    );
    for issue in &err.issues {
        let line = text.lines().nth(issue.line - 1).expect("the line exists");
        let at: String = line.chars().skip(issue.column - 1).collect();
        assert!(at.starts_with("{ vault = \"tazlab-admn\" }"), "{issue}");
        assert!(
            issue
                .message
                .contains("`tazlab-admn` is not a generated password")
                && issue.message.contains("`tazlab-admin`"),
            "{issue}"
        );
    }
    // The lab's own refs name a declared password and validate.
    Config::from_str(&lab, "castle.toml", &dir).unwrap_or_else(|e| panic!("{e}"));
}

/// Issue 17: what would otherwise be found after the VMs exist is refused by
/// `castle validate`, where it is written: a chart without a pinned version (Flux
/// would install whatever is latest), Flux's release manifest without its sha256,
/// values that are not Helm values. The lab's charts and pinned Flux validate.
#[test]
fn a_chart_without_version_and_flux_without_sha256_are_refused_where_they_are_written() {
    let lab = std::fs::read_to_string(lab_path()).expect("lab config");
    let dir = lab_path().parent().expect("lab dir").to_path_buf();
    let config = Config::from_str(&lab, "castle.toml", &dir).unwrap_or_else(|e| panic!("{e}"));
    for name in ["eso", "metallb", "longhorn"] {
        let release = config.release(name).expect("a chart");
        assert!(release.chart.version.is_some(), "{name}");
    }
    assert!(
        config
            .components
            .flux
            .as_ref()
            .and_then(|f| f.sha256.as_ref())
            .is_some()
    );

    let unpinned = lab.replacen(", version = \"0.15.2\" }", " }", 1);
    let err = Config::from_str(&unpinned, "castle.toml", &dir).expect_err("no version");
    assert_eq!(err.issues.len(), 1, "{err}");
    let issue = &err.issues[0];
    assert_eq!(issue.key, "components.metallb.chart");
    assert!(
        issue.message.contains("a chart needs a pinned `version`"),
        "{issue}"
    );
    let line = unpinned
        .lines()
        .nth(issue.line - 1)
        .expect("the line exists");
    assert!(line.starts_with("chart = { repo = \"https://metallb.github.io/metallb\""));

    let unpinned_flux = lab.replace(
        "sha256 = \"b981e0101ae8e0781bb85d3cc4108ee89863c946faffe4759a01172fb5c741d5\"\n",
        "",
    );
    let err = Config::from_str(&unpinned_flux, "castle.toml", &dir).expect_err("no sha256");
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].key, "components.flux");
    assert!(
        err.issues[0].message.contains("needs `sha256`"),
        "{}",
        err.issues[0]
    );
    // A pin that does not match the file is the digest mismatch, naming both.
    let wrong = lab.replace(
        "b981e0101ae8e0781bb85d3cc4108ee89863c946faffe4759a01172fb5c741d5",
        &"0".repeat(64),
    );
    let err = Config::from_str(&wrong, "castle.toml", &dir).expect_err("wrong pin");
    assert!(
        err.to_string()
            .contains(&format!("expected {}", "0".repeat(64)))
            && err.to_string().contains(
                "actual b981e0101ae8e0781bb85d3cc4108ee89863c946faffe4759a01172fb5c741d5"
            ),
        "{err}"
    );

    let dated = lab.replacen(
        "values = { speaker = { logLevel = \"info\" } }",
        "values = { speaker = { since = 2026-01-01T00:00:00Z } }",
        1,
    );
    let err = Config::from_str(&dated, "castle.toml", &dir).expect_err("a date-time");
    assert_eq!(
        err.issues[0].key, "components.metallb.values.speaker.since",
        "{err}"
    );
}

#[test]
fn an_unknown_key_under_vault_is_refused_next_to_the_embedded_spec() {
    let text = std::fs::read_to_string(lab_path())
        .expect("lab config")
        .replacen(
            "service_account_key = ",
            "policies = []\nservice_account_key = ",
            1,
        );
    let err = Config::from_str(&text, "castle.toml", Path::new(".")).expect_err("unknown key");
    assert_eq!(err.issues[0].key, "vault.policies", "{err}");
    assert!(
        err.issues[0].message.contains("unknown field `policies`"),
        "{err}"
    );
}

#[test]
fn secret_refs_serialize_as_references() {
    let json = serde_json::to_string(&SecretRef::file("github-token")).expect("serializable");
    assert_eq!(json, r#"{"file":"github-token"}"#);
    let json = serde_json::to_string(&SecretRef::env("GITHUB_TOKEN")).expect("serializable");
    assert_eq!(json, r#"{"env":"GITHUB_TOKEN"}"#);
    assert_eq!(
        SecretRef::file("github-token").to_string(),
        r#"{ file = "github-token" }"#
    );
    assert_eq!(SecretRef::fallback_env("github-token"), "GITHUB_TOKEN");
    let json = serde_json::to_string(&SecretRef::vault("db-admin")).expect("serializable");
    assert_eq!(json, r#"{"vault":"db-admin"}"#);
    assert_eq!(
        SecretRef::vault("db-admin").to_string(),
        r#"{ vault = "db-admin" }"#
    );
}

const CANARY: &str = "canary-value-5f1c";

/// A secrets directory with one secret, a file outside it and a symlink out of it.
fn secrets_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("secrets");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("github-token"), format!("{CANARY}\n")).expect("write");
    std::fs::write(root.path().join("outside"), CANARY).expect("write");
    std::os::unix::fs::symlink(root.path().join("outside"), dir.join("link-out")).expect("symlink");
    std::os::unix::fs::symlink(dir.join("github-token"), dir.join("link-in")).expect("symlink");
    (root, dir)
}

#[test]
fn a_file_ref_resolves_inside_the_directory_without_its_trailing_newline() {
    let (_root, dir) = secrets_dir();
    let secrets = Secrets::new(&dir, false);
    let value = secrets
        .resolve(&SecretRef::file("github-token"))
        .expect("resolves");
    assert_eq!(value.expose_secret(), CANARY);
    let linked = secrets
        .resolve(&SecretRef::file("link-in"))
        .expect("a symlink inside is fine");
    assert_eq!(linked.expose_secret(), CANARY);
}

#[test]
fn a_resolved_secret_never_shows_in_debug_output() {
    let (_root, dir) = secrets_dir();
    let value = Secrets::new(&dir, false)
        .resolve(&SecretRef::file("github-token"))
        .expect("resolves");
    assert!(!format!("{value:?}").contains(CANARY));
    assert!(!format!("{value:#?}").contains(CANARY));
}

#[test]
fn escapes_by_dot_dot_absolute_path_or_symlink_are_refused() {
    let (_root, dir) = secrets_dir();
    let secrets = Secrets::new(&dir, true);
    let absolute = dir.join("github-token").display().to_string();
    for bad in [
        "../outside",
        "sub/../../outside",
        absolute.as_str(),
        "link-out",
    ] {
        let err = secrets.resolve(&SecretRef::file(bad)).expect_err(bad);
        assert!(matches!(err, SecretError::Escapes { .. }), "{bad}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains("outside the secrets directory") && !text.contains(CANARY),
            "{bad}: {text}"
        );
    }
}

#[test]
fn env_refs_resolve_from_the_environment() {
    // Setting variables is unsafe in Rust 2024 and this workspace forbids unsafe code,
    // so the tests use PATH, which every test environment has.
    let path = std::env::var("PATH").expect("PATH is set");
    let secrets = Secrets::new("/nonexistent", false);
    let value = secrets.resolve(&SecretRef::env("PATH")).expect("resolves");
    assert_eq!(value.expose_secret(), path.trim_end_matches('\n'));
    let err = secrets
        .resolve(&SecretRef::env("CASTLE_TEST_NEVER_SET"))
        .expect_err("unset")
        .to_string();
    assert!(
        err.contains(r#"{ env = "CASTLE_TEST_NEVER_SET" }"#),
        "{err}"
    );
}

#[test]
fn a_missing_file_falls_back_to_its_variable_only_when_asked() {
    let path = std::env::var("PATH").expect("PATH is set");
    let (_root, dir) = secrets_dir();
    let value = Secrets::new(&dir, true)
        .resolve(&SecretRef::file("path"))
        .expect("falls back to $PATH");
    assert_eq!(value.expose_secret(), path.trim_end_matches('\n'));
    let err = Secrets::new(&dir, false)
        .resolve(&SecretRef::file("path"))
        .expect_err("no fallback");
    assert!(matches!(err, SecretError::Missing { .. }), "{err:?}");
}

#[test]
fn a_missing_secret_names_the_ref_and_where_it_looked_but_no_value() {
    let (_root, dir) = secrets_dir();
    for fallback in [true, false] {
        let err = Secrets::new(&dir, fallback)
            .resolve(&SecretRef::file("tailscale-client-secret"))
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains(r#"{ file = "tailscale-client-secret" }"#),
            "{err}"
        );
        assert!(
            err.contains(&dir.join("tailscale-client-secret").display().to_string()),
            "{err}"
        );
        assert_eq!(err.contains("TAILSCALE_CLIENT_SECRET"), fallback, "{err}");
        assert!(!err.contains(CANARY), "{err}");
    }
}

#[test]
fn malformed_refs_are_refused_before_any_lookup() {
    let secrets = Secrets::new("/nonexistent", true);
    let both = SecretRef {
        file: Some("a".into()),
        env: Some("B".into()),
        vault: None,
    };
    let three = SecretRef {
        vault: Some("db-admin".into()),
        ..both.clone()
    };
    for (r, words) in [
        (both, "not several"),
        (three, "not several"),
        (SecretRef::default(), "needs `file"),
        (SecretRef::vault(""), "`vault` is empty"),
        (
            SecretRef::env("NOT-A-NAME"),
            "not an environment variable name",
        ),
        (SecretRef::file(""), "empty"),
    ] {
        let err = secrets.resolve(&r).expect_err(words);
        assert!(matches!(err, SecretError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains(words), "{err}");
    }
}

/// Every issue names the file and a place inside the text, a key and a message.
fn located(text: &str, origin: &str, err: &castle_core::config::ConfigError) -> Result<(), String> {
    if err.issues.is_empty() {
        return Err("an error without issues".into());
    }
    let lines: Vec<&str> = text.split('\n').collect();
    for i in &err.issues {
        let width = lines.get(i.line.wrapping_sub(1)).map(|l| l.chars().count());
        let inside = width.is_some_and(|w| (1..=w + 1).contains(&i.column));
        if i.file != origin || !inside || i.key.is_empty() || i.message.trim().is_empty() {
            return Err(format!("not located: {i}"));
        }
    }
    Ok(())
}

/// One edit of a valid config: what a hurried person or a broken editor does.
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, String),
    Delete(usize, usize),
    /// The value of the n-th `key = value` line becomes this TOML.
    Value(usize, &'static str),
    DropLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
}

/// Values that are valid TOML but wrong in interesting ways.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "65536",
    "4095",
    "9223372036854775807",
    "-9223372036854775808",
    "1e300",
    "-1e300",
    "nan",
    "inf",
    "-0.0",
    "0.5",
    "true",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"../x\"",
    "\"/etc/passwd\"",
    "\"a/b\"",
    "\"https://\"",
    "\"1.2.3.4/33\"",
    "\"::1\"",
    "[]",
    "[1]",
    "[1, 2, 3]",
    "[\"\"]",
    "[[]]",
    "{}",
    "{ file = \"\" }",
    "{ env = \"\" }",
    "{ file = \"absent\" }",
    "\"\u{7f}\"",
    "\"\u{1F600}\"",
    "1979-05-27T07:32:00Z",
];

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<usize>(), any::<String>()).prop_map(|(p, s)| Mutation::Insert(p, s)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), proptest::sample::select(VALUES)).prop_map(|(n, v)| Mutation::Value(n, v)),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn mutate(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    match m {
        Mutation::Insert(p, s) => {
            let at = boundary(text, *p);
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        Mutation::Delete(p, n) => {
            let from = boundary(text, *p);
            let to = boundary(text, from.saturating_add(*n).min(text.len()));
            format!("{}{}", &text[..from], &text[to.max(from)..])
        }
        Mutation::Value(n, v) => {
            let assigned: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains(" = "))
                .collect();
            let Some(&i) = assigned.get(n % assigned.len().max(1)) else {
                return text.to_string();
            };
            let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
            lines[i] = format!("{key} = {v}");
            lines.join("\n")
        }
        Mutation::DropLine(n) => {
            let n = n % lines.len();
            lines.remove(n);
            lines.join("\n")
        }
        Mutation::DuplicateLine(n) => {
            let n = n % lines.len();
            let line = lines[n].clone();
            lines.insert(n, line);
            lines.join("\n")
        }
        Mutation::Truncate(p) => text[..boundary(text, *p)].to_string(),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 512,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Any bytes at all, read as a file: never a panic, every error located.
    #[test]
    fn any_bytes_are_refused_at_a_place_or_loaded(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("castle.toml");
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = Config::load(&path) {
            let text = String::from_utf8_lossy(&bytes);
            located(&text, &path.display().to_string(), &e).map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }

    /// Any text: never a panic, every error located.
    #[test]
    fn any_text_is_refused_at_a_place_or_loaded(text in proptest::prelude::any::<String>()) {
        if let Err(e) = Config::from_str(&text, "castle.toml", Path::new(".")) {
            located(&text, "castle.toml", &e).map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }

    /// The lab config after a few random edits: never a panic, every error located.
    #[test]
    fn a_mutated_lab_config_is_refused_at_a_place_or_loaded(edits in proptest::collection::vec(mutation(), 1..4)) {
        let original = std::fs::read_to_string(lab_path()).expect("lab config");
        let text = edits.iter().fold(original, |t, m| mutate(&t, m));
        let dir = lab_path().parent().expect("has a parent").to_path_buf();
        if let Err(e) = Config::from_str(&text, "castle.toml", &dir) {
            located(&text, "castle.toml", &e).map_err(proptest::test_runner::TestCaseError::fail)?;
        }
    }
}
