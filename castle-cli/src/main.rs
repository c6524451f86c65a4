//! `castle`: rebuild an ephemeral Talos/Kubernetes cluster on Proxmox in one command.

// The doc comments below are clap's help text, where `<cluster dir>` is a placeholder
// and not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod progress;

// `println!` and friends panic when the reader has gone (`castle status | head -1`);
// these drop what no one is left to read.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use castle_core::castle::{Castle, RunOptions, RunSummary};
use castle_core::engine::Cancel;
use castle_core::events::Events;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

/// Rebuild an ephemeral Kubernetes cluster (Talos on Proxmox, Vault over Tailscale,
/// Flux) from nothing in one command, and raze it again.
#[derive(Debug, Parser)]
#[command(name = "castle", version, about, long_about = None)]
struct Cli {
    /// The cluster's castle.toml; the cluster directory is the one holding it.
    #[arg(
        long,
        short,
        global = true,
        default_value = "castle.toml",
        env = "CASTLE_CONFIG"
    )]
    config: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check castle.toml; every error names file:line:column and key.
    ///
    /// The file, not the machine: a secret ref whose file or variable is absent here
    /// is listed with where it goes, not failed. `create`, `plan` and `doctor`
    /// refuse to start without it.
    Validate,
    /// Write a commented starter castle.toml for a new cluster into DIR.
    Init {
        /// The new cluster's directory (created if missing).
        dir: PathBuf,
        /// The cluster's name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check every system castle.toml names, read-only: each check passes, warns or
    /// fails with the fix. Exit 0 when nothing fails, 1 otherwise.
    Doctor,
    /// Show the step graph.
    Graph,
    /// Show what `create` would do, step by step, without changing anything.
    Plan,
    /// Build the cluster (idempotent: a second run changes nothing).
    Create {
        /// Skip steps that finished with unchanged inputs.
        #[arg(long)]
        resume: bool,
        /// Run only these steps (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Raze the cluster: VMs Castle owns, tailnet devices, Vault leases.
    Destroy {
        /// Also delete what Castle generated and keeps for rebirths (Vault KV material).
        #[arg(long)]
        wipe: bool,
    },
    /// What the journal says exists, and what failed.
    Status,
    /// The last run's timing table; writes timeline.svg into its run directory.
    Report,
    /// The declarative Vault configuration alone.
    Vault {
        #[command(subcommand)]
        action: VaultAction,
    },
    /// Tailscale helpers.
    Tailscale {
        #[command(subcommand)]
        action: TailscaleAction,
    },
    /// Talos helpers.
    Talos {
        #[command(subcommand)]
        action: TalosAction,
    },
    /// Where the journal and the cluster lock live ([state]), and moving the
    /// journal between this directory and Vault.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Release the cluster's lock left by a run that is gone: a lease that expired
    /// or whose process is gone from this machine. Twice (--force --force) breaks a
    /// live lease too; its run, if alive, stops at its next journal write.
    Unlock {
        /// Required; give it twice to break a live lease.
        #[arg(long, action = clap::ArgAction::Count)]
        force: u8,
    },
    /// Print a shell completion script (`castle completions bash > ~/.local/share/bash-completion/completions/castle`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the castle(1) man page (roff), e.g. `castle man > castle.1`.
    Man,
}

#[derive(Debug, Subcommand)]
enum StateAction {
    /// Where the state lives, who holds the lock, and whether a journal waits here
    /// to be written back.
    Show,
    /// Copy <cluster dir>/.castle/state.json to Vault, byte for byte (refuses to
    /// overwrite a journal that is not older).
    Push {
        /// Overwrite even a newer journal.
        #[arg(long)]
        force: bool,
    },
    /// Copy the journal in Vault to <cluster dir>/.castle/state.json, byte for byte
    /// (refuses to overwrite a journal that is not older).
    Pull {
        /// Overwrite even a newer journal.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TalosAction {
    /// Write every node's machine config as the `talos` step makes it (the cluster's
    /// secrets bundle from Vault when kept there; the tailnet key is a placeholder).
    Render {
        /// Only this node (without --out: default the first control plane).
        #[arg(long)]
        node: Option<String>,
        /// Write `<node>.yaml` files here (mode 0600) instead of printing one config.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum VaultAction {
    /// Diff the spec against the live Vault (shows hand-made drift).
    Plan,
    /// Apply exactly the plan.
    Apply,
}

#[derive(Debug, Subcommand)]
enum TailscaleAction {
    /// Mint one auth key with the cluster's policy and print it to stdout.
    MintKey,
}

/// Exit codes: 0 success, 1 a step failed, 2 usage or configuration, 130 interrupted.
#[derive(Debug)]
enum Outcome {
    Ok,
    Failed,
    Cancelled,
}

const FAILED: u8 = 1;
const USAGE: u8 = 2;
const INTERRUPTED: u8 = 130;

/// The command was used in a way that cannot work (no run to report yet): exit 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are answers, not errors: clap prints them as ever.
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            let message = e.render().to_string();
            let message = message
                .trim()
                .strip_prefix("error: ")
                .unwrap_or(message.trim());
            print_error(true, "usage", USAGE, message, None);
            return ExitCode::from(USAGE);
        }
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            print_error(json, "failed", FAILED, &message, None);
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(FAILED),
        Ok(Outcome::Cancelled) => ExitCode::from(INTERRUPTED),
        Err(e) => {
            let (kind, code) = classify(&e);
            let issues = e
                .downcast_ref::<castle_core::Error>()
                .and_then(|c| match c {
                    castle_core::Error::Config(config) => Some(&config.issues),
                    _ => None,
                })
                .map(|issues| issues.iter().map(issue_json).collect());
            print_error(json, kind, code, &message(&e), issues);
            ExitCode::from(code)
        }
    }
}

/// What kind of failure `e` is, and the exit code the README promises for it.
fn classify(e: &anyhow::Error) -> (&'static str, u8) {
    use castle_core::Error;
    if e.downcast_ref::<Usage>().is_some() {
        return ("usage", USAGE);
    }
    match e.downcast_ref::<Error>() {
        Some(Error::Config(_)) => ("config", USAGE),
        Some(Error::Secret(_)) => ("secret", USAGE),
        // A run stopped at a journal write it could not make (--resume goes on), or
        // the Vault keeping the state could not be asked.
        Some(Error::Journal(j))
            if j.stopped_a_run()
                || matches!(j, castle_core::journal::JournalError::Backend { .. }) =>
        {
            ("journal", FAILED)
        }
        // Another run holds the cluster, or the journal is not Castle's.
        Some(Error::Journal(_)) => ("journal", USAGE),
        // A command that needs a section castle.toml does not have.
        Some(Error::Graph(_)) => ("usage", USAGE),
        // `castle init` into a directory that has a cluster already.
        Some(Error::Exists { .. }) => ("usage", USAGE),
        Some(Error::StepFailed { .. }) => ("step_failed", FAILED),
        Some(Error::Cancelled { .. }) => ("cancelled", INTERRUPTED),
        _ => ("failed", FAILED),
    }
}

/// The error and its causes on one line, each said once: an error that prints its
/// source already must not have it repeated after it.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if cause.contains(&out) {
            // A context that only repeats what its cause says first.
            out = cause;
        } else if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

/// One located castle.toml issue as JSON.
fn issue_json(i: &castle_core::config::Issue) -> serde_json::Value {
    serde_json::json!({
        "file": i.file, "line": i.line, "column": i.column,
        "key": i.key, "message": i.message,
    })
}

/// Text on stderr, or with `--json` one JSON object on stderr (stdout stays for
/// results): `{"error": {"kind", "exit_code", "message", "issues"?}}`, `issues`
/// being castle.toml's located issues.
fn print_error(
    json: bool,
    kind: &str,
    code: u8,
    message: &str,
    issues: Option<Vec<serde_json::Value>>,
) {
    if json {
        let mut error = serde_json::json!({"kind": kind, "exit_code": code, "message": message});
        if let Some(issues) = issues {
            error["issues"] = serde_json::Value::Array(issues);
        }
        errln!("{}", serde_json::json!({ "error": error }));
    } else {
        errln!("error: {message}");
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let json = cli.json;
    match cli.command {
        Command::Init { dir, name } => {
            let path = castle_core::castle::init(&dir, name.as_deref())?;
            let secrets = dir.join("secrets");
            outln!(
                "wrote {} (and .gitignore, {}/ mode 0700)",
                path.display(),
                secrets.display()
            );
            outln!("next:");
            outln!(
                "  put the Proxmox API token's secret in {} (or set PROXMOX_TOKEN)",
                secrets.join("proxmox-token").display()
            );
            outln!(
                "  edit the addresses, uncomment the sections you need (reference: docs/castle-toml.md)"
            );
            outln!("  castle validate --config {}", path.display());
            outln!("  castle doctor --config {}", path.display());
            Ok(Outcome::Ok)
        }
        Command::Validate => {
            let (config, absent) =
                castle_core::config::Config::load_allowing_absent_secrets(&cli.config)
                    .map_err(castle_core::Error::from)?;
            let castle = Castle::from_config(config)?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "valid": true,
                        "config": cli.config,
                        "steps": castle.step_ids()?,
                        "requires": castle.requirements(),
                        "absent_secrets": absent.iter().map(issue_json).collect::<Vec<_>>(),
                    })
                );
            } else {
                outln!("{}: valid ({})", cli.config.display(), castle.summary());
                if !absent.is_empty() {
                    outln!(
                        "not provided on this machine yet (create, plan and doctor need {}):",
                        if absent.len() == 1 { "it" } else { "them" }
                    );
                    for issue in &absent {
                        outln!("  {issue}");
                    }
                }
                outln!("the credentials need:");
                for line in castle.requirements() {
                    outln!("  {line}");
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "castle", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Ok(Outcome::Ok)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out)?;
            out!("{}", String::from_utf8_lossy(&out));
            Ok(Outcome::Ok)
        }
        Command::Doctor => {
            let castle = Castle::open(&cli.config)?;
            let findings = castle.doctor().await;
            let failed = castle_probe::any_failed(&findings);
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "ok": !failed,
                        "findings": findings,
                    }))?
                );
            } else {
                for f in &findings {
                    outln!("{f}");
                }
                let count = |s| findings.iter().filter(|f| f.status == s).count();
                outln!(
                    "{} passed, {} warnings, {} failed",
                    count(castle_probe::Status::Pass),
                    count(castle_probe::Status::Warn),
                    count(castle_probe::Status::Fail)
                );
            }
            Ok(if failed { Outcome::Failed } else { Outcome::Ok })
        }
        Command::Graph => {
            let castle = Castle::open(&cli.config)?;
            out!("{}", castle.graph()?.describe());
            Ok(Outcome::Ok)
        }
        Command::Plan => {
            let castle = Castle::open(&cli.config)?;
            let plan = castle.plan().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                out!("{}", plan.render());
            }
            Ok(Outcome::Ok)
        }
        Command::Create { resume, only } => {
            let castle = Castle::open(&cli.config)?;
            let only = (!only.is_empty()).then(|| only.into_iter().collect::<BTreeSet<_>>());
            let summary = with_progress(json, |options| {
                castle.create(RunOptions {
                    resume,
                    only,
                    ..options
                })
            })
            .await?;
            finish(json, &summary)
        }
        Command::Destroy { wipe } => {
            let castle = Castle::open(&cli.config)?;
            let summary = with_progress(json, |options| castle.destroy(options, wipe)).await?;
            let outcome = finish(json, &summary)?;
            // Asked of the systems themselves, not read from the journal.
            let status = castle.status().await?;
            if !json {
                if status.leftovers.is_empty() {
                    outln!(
                        "nothing of cluster {} is left on Proxmox, the tailnet or Vault",
                        status.cluster
                    );
                } else {
                    outln!("still present:");
                    for l in &status.leftovers {
                        outln!("  {l}");
                    }
                }
            }
            Ok(outcome)
        }
        Command::Status => {
            let castle = Castle::open(&cli.config)?;
            let status = castle.status().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                out!("{}", status.render());
            }
            Ok(Outcome::Ok)
        }
        Command::Report => {
            let castle = Castle::open(&cli.config)?;
            let (dir, report) = castle
                .last_report()?
                .ok_or_else(|| Usage("no run yet: run `castle create` first".into()))?;
            castle_core::run::write_report(&dir, &report)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", report.table());
                outln!("timeline: {}", dir.join("timeline.svg").display());
            }
            Ok(Outcome::Ok)
        }
        Command::Vault { action } => {
            let castle = Castle::open(&cli.config)?.with_notices(notices(json));
            let plan = match action {
                VaultAction::Plan => castle.vault_plan().await?,
                VaultAction::Apply => castle.vault_apply().await?,
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                out!("{}", plan.render());
            }
            Ok(Outcome::Ok)
        }
        Command::Talos {
            action: TalosAction::Render { node, out },
        } => {
            let castle = Castle::open(&cli.config)?;
            render_talos(&castle, json, node, out).await
        }
        Command::State { action } => {
            let castle = Castle::open(&cli.config)?.with_notices(notices(json));
            state(&castle, json, action).await
        }
        Command::Unlock { force } => {
            let castle = Castle::open(&cli.config)?;
            let force = match force {
                0 => {
                    return Err(Usage(
                        "`castle unlock` releases another run's lock: pass --force (twice to break a live lease); `castle state show` says who holds it".into(),
                    )
                    .into());
                }
                1 => castle_core::state::Force::Dead,
                _ => castle_core::state::Force::Live,
            };
            let done = castle.unlock(force).await?;
            if json {
                outln!("{}", serde_json::json!({ "unlocked": done }));
            } else {
                outln!("{done}");
            }
            Ok(Outcome::Ok)
        }
        Command::Tailscale {
            action: TailscaleAction::MintKey,
        } => {
            let castle = Castle::open(&cli.config)?.with_notices(notices(json));
            let key = castle.mint_key().await?;
            // The one place Castle prints a key: the user asked for it, on stdout only.
            outln!("{}", key.expose_secret());
            Ok(Outcome::Ok)
        }
    }
}

/// Where commands that are no run say what the user should hear of (a lease taken
/// over): the progress display's stderr lines.
fn notices(json: bool) -> Events {
    Events::new().with(Arc::new(progress::Progress::new(json)))
}

/// `castle state show|push|pull`.
async fn state(castle: &Castle, json: bool, action: StateAction) -> anyhow::Result<Outcome> {
    use castle_core::state::Transferred;
    let (moved, from, to) = match action {
        StateAction::Show => {
            let info = castle.state_info().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                out!("{}", info.render());
            }
            return Ok(Outcome::Ok);
        }
        StateAction::Push { force } => (castle.state_push(force).await?, "file", "vault"),
        StateAction::Pull { force } => (castle.state_pull(force).await?, "vault", "file"),
    };
    let (copied, text) = match moved {
        Transferred::Same => (
            false,
            format!("the {to} journal is the same as the {from} one already"),
        ),
        Transferred::Copied { last_run } => (
            true,
            format!(
                "copied the journal from {from} to {to} (last run {})",
                last_run.as_deref().unwrap_or("none")
            ),
        ),
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({ "copied": copied, "from": from, "to": to })
        );
    } else {
        outln!("{text}");
    }
    Ok(Outcome::Ok)
}

/// `castle talos render`: files 0600 under `out`, or one config on stdout.
async fn render_talos(
    castle: &Castle,
    json: bool,
    node: Option<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<Outcome> {
    let node = match (&node, &out) {
        (None, None) => castle
            .config()
            .control_planes()
            .next()
            .map(|n| n.name.clone()),
        _ => node,
    };
    let rendered = castle.talos_render(node.as_deref()).await?;
    if !rendered.bundle_is_the_clusters {
        errln!(
            "note: no secrets bundle is kept for this cluster yet: these configs use a fresh one, which `castle create` will not reuse"
        );
    }
    let Some(dir) = out else {
        let one = rendered
            .configs
            .first()
            .ok_or_else(|| Usage("castle.toml has no nodes".into()))?;
        errln!(
            "{} ({}, {}): this config holds the cluster's keys; do not paste it anywhere",
            one.node,
            one.role,
            one.address
        );
        out!("{}", one.config.rendered.expose_secret());
        return Ok(Outcome::Ok);
    };
    let mut written = Vec::new();
    for c in &rendered.configs {
        let path = dir.join(format!("{}.yaml", c.node));
        castle_talos::write_private(&path, &c.config.rendered)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(serde_json::json!({
            "node": c.node, "role": c.role, "address": c.address,
            "path": path, "sha256": c.config.digest,
        }));
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "written": written,
                "bundle_is_the_clusters": rendered.bundle_is_the_clusters,
            }))?
        );
    } else {
        for (w, c) in written.iter().zip(&rendered.configs) {
            outln!(
                "{}  {} ({})",
                w["path"].as_str().unwrap_or_default(),
                c.node,
                c.role
            );
        }
    }
    errln!(
        "warning: these files hold the cluster's secrets (CA keys, tokens); they are mode 0600: keep them out of git and delete them when done"
    );
    Ok(Outcome::Ok)
}

/// Runs a create or destroy with live progress and Ctrl-C turned into cancellation:
/// the first Ctrl-C lets running steps reach a safe point, a second one exits at once.
async fn with_progress<F, Fut>(json: bool, start: F) -> anyhow::Result<RunSummary>
where
    F: FnOnce(RunOptions) -> Fut,
    Fut: std::future::Future<Output = castle_core::Result<RunSummary>>,
{
    let cancel = Cancel::new();
    let watcher = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            errln!(
                "\ninterrupted: letting running steps reach a safe point (Ctrl-C again to quit now)"
            );
            watcher.cancel("interrupted (Ctrl-C)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let events = Events::new().with(Arc::new(progress::Progress::new(json)));
    let options = RunOptions {
        events,
        cancel,
        ..RunOptions::default()
    };
    Ok(start(options).await?)
}

fn finish(json: bool, summary: &RunSummary) -> anyhow::Result<Outcome> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&summary.report)?);
    } else if summary.error.is_none() && summary.report.steps.iter().all(|s| s.status == "skipped")
    {
        outln!("nothing to do: every step is done with the same inputs");
        outln!("run directory: {}", summary.run_dir.display());
    } else {
        outln!();
        out!("{}", summary.report.table());
        outln!("run directory: {}", summary.run_dir.display());
    }
    Ok(match &summary.error {
        None => Outcome::Ok,
        Some(castle_core::Error::Cancelled { reason }) => {
            let message =
                format!("cancelled: {reason}; run the same command with --resume to finish");
            if json {
                print_error(true, "cancelled", INTERRUPTED, &message, None);
            } else {
                errln!("{message}");
            }
            Outcome::Cancelled
        }
        Some(e) => {
            let message = format!(
                "{e}; fix the cause, then run `castle create --resume` to finish without redoing what is done"
            );
            print_error(json, "step_failed", FAILED, &message, None);
            Outcome::Failed
        }
    })
}
