//! `cargo bench -p castle-vault --bench apply` (after scripts/services.sh, with
//! target/services.env exported): the reference Vault configuration applied by
//! Castle against a real OpenBao, beside the same configuration done the way the
//! reference setup's Ansible did it, one `bao` CLI process per command. Every `bao`
//! command's exit is checked, and Castle's own plan of what the CLI made must be
//! empty: both sides write the same ten objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use castle_vault::{VaultClient, VaultSettings, VaultSpec, apply, plan};
use secrecy::SecretString;

const RUNS: usize = 7;

fn spec_text(run: &str, pem: &str) -> String {
    let (eso, grafana) = (eso_policy(run), grafana_policy(run));
    format!(
        r#"
[[kv]]
path = "kv-{run}"
[[jwt]]
path = "jwt-{run}"
bound_issuer = "https://192.168.1.210:6443"
validation_pubkeys = ["""{pem}"""]
[jwt.roles.external-secrets]
user_claim = "sub"
bound_audiences = ["vault"]
token_policies = ["eso-{run}"]
token_ttl = 3600
[jwt.roles.grafana]
user_claim = "sub"
bound_audiences = ["vault"]
token_policies = ["grafana-{run}"]
token_ttl = 3600
[policies]
eso-{run} = '{eso}'
grafana-{run} = '{grafana}'
[[database]]
path = "db-{run}"
[database.connections.main]
connection_url = "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:15432/postgres"
username = "postgres"
password = "unused"
verify_connection = false
allowed_roles = ["grafana"]
[database.roles.grafana]
db_name = "main"
creation_statements = ["CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}';"]
"#
    )
}

fn eso_policy(run: &str) -> String {
    format!(r#"path "kv-{run}/data/*" {{ capabilities = ["read"] }}"#)
}

fn grafana_policy(run: &str) -> String {
    format!(r#"path "db-{run}/creds/grafana" {{ capabilities = ["read"] }}"#)
}

/// One `bao` invocation: its arguments and what it reads on stdin.
struct BaoCommand {
    args: Vec<String>,
    stdin: Option<String>,
}

/// The same configuration as `bao` commands, one process each.
fn cli_commands(run: &str, pem: &str) -> Vec<BaoCommand> {
    let cmd = |v: &[&str]| BaoCommand {
        args: v.iter().map(|x| x.to_string()).collect(),
        stdin: None,
    };
    let policy = |name: String, text: String| BaoCommand {
        args: vec!["policy".into(), "write".into(), name, "-".into()],
        stdin: Some(text),
    };
    vec![
        cmd(&["secrets", "enable", &format!("-path=kv-{run}"), "kv-v2"]),
        cmd(&["auth", "enable", &format!("-path=jwt-{run}"), "jwt"]),
        cmd(&[
            "write",
            &format!("auth/jwt-{run}/config"),
            "bound_issuer=https://192.168.1.210:6443",
            &format!("jwt_validation_pubkeys={pem}"),
        ]),
        policy(format!("eso-{run}"), eso_policy(run)),
        policy(format!("grafana-{run}"), grafana_policy(run)),
        cmd(&[
            "write",
            &format!("auth/jwt-{run}/role/external-secrets"),
            "role_type=jwt",
            "user_claim=sub",
            "bound_audiences=vault",
            &format!("token_policies=eso-{run}"),
            "token_ttl=3600",
        ]),
        cmd(&[
            "write",
            &format!("auth/jwt-{run}/role/grafana"),
            "role_type=jwt",
            "user_claim=sub",
            "bound_audiences=vault",
            &format!("token_policies=grafana-{run}"),
            "token_ttl=3600",
        ]),
        cmd(&["secrets", "enable", &format!("-path=db-{run}"), "database"]),
        cmd(&[
            "write",
            &format!("db-{run}/config/main"),
            "plugin_name=postgresql-database-plugin",
            "connection_url=postgresql://{{username}}:{{password}}@127.0.0.1:15432/postgres",
            "username=postgres",
            "password=unused",
            "verify_connection=false",
            "allowed_roles=grafana",
        ]),
        cmd(&[
            "write",
            &format!("db-{run}/roles/grafana"),
            "db_name=main",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';",
            // Castle's defaults for a database role; Vault's own are 0 (the
            // mount's), so leaving them out would be a different configuration.
            "default_ttl=3600",
            "max_ttl=86400",
        ]),
    ]
}

/// Runs every command and checks how each ended. The first time every command must
/// succeed; run again, an `enable` of a mount that exists fails with "path is
/// already in use", which is the one failure the reference's Ansible ignored.
fn run_cli(bao: &str, run: &str, pem: &str, again: bool) -> f64 {
    let t = Instant::now();
    for c in cli_commands(run, pem) {
        let mut child = Command::new(bao)
            .args(&c.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(text) = &c.stdin {
            stdin.write_all(text.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tolerated = again && c.args[1] == "enable" && stderr.contains("already in use");
        assert!(
            out.status.success() || tolerated,
            "bao {} failed ({}): {stderr}",
            c.args.join(" "),
            out.status
        );
    }
    t.elapsed().as_secs_f64() * 1000.0
}

fn resolved_spec(run: &str, pem: &str) -> VaultSpec {
    let spec: VaultSpec<String> = toml::from_str(&spec_text(run, pem)).unwrap();
    spec.resolve_secrets(|p| Ok::<_, ()>(SecretString::from(p.clone())))
        .unwrap()
}

/// Removes what one run made (untimed), so the shared server does not fill up.
fn clean_up(bao: &str, run: &str) {
    let commands: [&[&str]; 5] = [
        &["secrets", "disable", &format!("kv-{run}")],
        &["secrets", "disable", &format!("db-{run}")],
        &["auth", "disable", &format!("jwt-{run}")],
        &["policy", "delete", &format!("eso-{run}")],
        &["policy", "delete", &format!("grafana-{run}")],
    ];
    for args in commands {
        let out = Command::new(bao).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "bao {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Median, min and max of the timings in ms.
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let (Ok(addr), Ok(token), Ok(bao)) = (
        std::env::var("VAULT_ADDR"),
        std::env::var("VAULT_TOKEN"),
        std::env::var("CASTLE_TEST_BAO"),
    ) else {
        eprintln!("skipping: run scripts/services.sh and export target/services.env first");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = VaultClient::new(VaultSettings::new(&addr, SecretString::from(token))).unwrap();
    let (mut full, mut noop, mut cli_full, mut cli_again) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .public_key_pem();
    let pem = pem.trim();
    for i in 0..RUNS {
        let run = format!("bench{}{i}", std::process::id());
        let spec = resolved_spec(&run, pem);
        let t = Instant::now();
        rt.block_on(async {
            let p = plan(&client, &spec).await.unwrap();
            apply(&client, &spec, &p).await.unwrap();
        });
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        rt.block_on(async {
            let p = plan(&client, &spec).await.unwrap();
            assert!(p.is_empty(), "{}", p.render());
            apply(&client, &spec, &p).await.unwrap();
        });
        noop.push(t.elapsed().as_secs_f64() * 1000.0);
        let cli_run = format!("cli{}{i}", std::process::id());
        cli_full.push(run_cli(&bao, &cli_run, pem, false));
        // Like with like: Castle finds nothing to change in what the CLI made.
        rt.block_on(async {
            let p = plan(&client, &resolved_spec(&cli_run, pem)).await.unwrap();
            assert!(
                p.is_empty(),
                "the CLI made another configuration than Castle's:\n{}",
                p.render()
            );
        });
        cli_again.push(run_cli(&bao, &cli_run, pem, true));
        clean_up(&bao, &run);
        clean_up(&bao, &cli_run);
    }
    let (f, f_lo, f_hi) = stats(&mut full);
    let (n, n_lo, n_hi) = stats(&mut noop);
    let (cf, cf_lo, cf_hi) = stats(&mut cli_full);
    let (ca, ca_lo, ca_hi) = stats(&mut cli_again);
    println!(
        "vault apply of the reference configuration (10 objects) to a real OpenBao, median of {RUNS} (min-max):"
    );
    println!(
        "  full apply     castle {f:7.1} ms ({f_lo:.1}-{f_hi:.1})   bao CLI, a process per command {cf:7.1} ms ({cf_lo:.0}-{cf_hi:.0})   {:.0}x",
        cf / f
    );
    println!(
        "  again, no-op   castle {n:7.1} ms ({n_lo:.1}-{n_hi:.1})   bao CLI run again              {ca:7.1} ms ({ca_lo:.0}-{ca_hi:.0})   {:.0}x",
        ca / n
    );
    println!(
        "  every bao command checked (the second run tolerates only \"already in use\" on enable); Castle's plan of the CLI's result is empty"
    );
}
