//! `cargo bench -p castle-vault --bench apply` (after scripts/services.sh, with
//! target/services.env exported): the reference Vault configuration applied by
//! Castle against a real OpenBao, beside the same configuration done the way the
//! reference setup's Ansible did it, one `bao` CLI process per command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Instant;

use castle_vault::{VaultClient, VaultSettings, VaultSpec, apply, plan};
use secrecy::SecretString;

fn spec_text(run: &str, pem: &str) -> String {
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
eso-{run} = 'path "kv-{run}/data/*" {{ capabilities = ["read"] }}'
grafana-{run} = 'path "db-{run}/creds/grafana" {{ capabilities = ["read"] }}'
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

/// The same configuration as `bao` commands, one process each.
fn cli_commands(run: &str, pem: &str) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["secrets", "enable", &format!("-path=kv-{run}"), "kv-v2"]),
        s(&["auth", "enable", &format!("-path=jwt-{run}"), "jwt"]),
        s(&[
            "write",
            &format!("auth/jwt-{run}/config"),
            "bound_issuer=https://192.168.1.210:6443",
            &format!("jwt_validation_pubkeys={pem}"),
        ]),
        s(&["policy", "write", &format!("eso-{run}"), "-"]),
        s(&["policy", "write", &format!("grafana-{run}"), "-"]),
        s(&[
            "write",
            &format!("auth/jwt-{run}/role/external-secrets"),
            "role_type=jwt",
            "user_claim=sub",
            "bound_audiences=vault",
            &format!("token_policies=eso-{run}"),
            "token_ttl=3600",
        ]),
        s(&[
            "write",
            &format!("auth/jwt-{run}/role/grafana"),
            "role_type=jwt",
            "user_claim=sub",
            "bound_audiences=vault",
            &format!("token_policies=grafana-{run}"),
            "token_ttl=3600",
        ]),
        s(&["secrets", "enable", &format!("-path=db-{run}"), "database"]),
        s(&[
            "write",
            &format!("db-{run}/config/main"),
            "plugin_name=postgresql-database-plugin",
            "connection_url=postgresql://{{username}}:{{password}}@127.0.0.1:15432/postgres",
            "username=postgres",
            "password=unused",
            "verify_connection=false",
            "allowed_roles=grafana",
        ]),
        s(&[
            "write",
            &format!("db-{run}/roles/grafana"),
            "db_name=main",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';",
        ]),
    ]
}

fn run_cli(bao: &str, run: &str, pem: &str) -> f64 {
    let t = Instant::now();
    for args in cli_commands(run, pem) {
        let mut cmd = Command::new(bao);
        cmd.args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if args[0] == "policy" {
            use std::io::Write as _;
            let hcl = format!("path \"kv-{run}/data/*\" {{ capabilities = [\"read\"] }}");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(hcl.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        // The Ansible way re-runs every command; "already in use" on a second
        // run is what it ignores.
        let _ = child.wait_with_output().unwrap();
    }
    t.elapsed().as_secs_f64() * 1000.0
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
    for i in 0..5 {
        let run = format!("bench{}{i}", std::process::id());
        let spec: VaultSpec<String> = toml::from_str(&spec_text(&run, pem)).unwrap();
        let spec = spec
            .resolve_secrets(|p| Ok::<_, ()>(SecretString::from(p.clone())))
            .unwrap();
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
        cli_full.push(run_cli(&bao, &cli_run, pem));
        cli_again.push(run_cli(&bao, &cli_run, pem));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (f, n, cf, ca) = (
        median(&mut full),
        median(&mut noop),
        median(&mut cli_full),
        median(&mut cli_again),
    );
    println!("vault apply of the reference configuration (10 objects), median of 5, real OpenBao:");
    println!(
        "  castle full apply     {f:8.1} ms   bao CLI, a process per command {cf:8.1} ms   ({:.0}x)",
        cf / f
    );
    println!(
        "  castle no-op re-apply {n:8.1} ms   bao CLI run again              {ca:8.1} ms   ({:.0}x)",
        ca / n
    );
}
