//! The facade: one cluster, its graph, and the runs the CLI and Python expose.

mod shared_state;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use serde::Serialize;

use crate::backends::Backends;
use crate::config::Config;
use crate::engine::{Action, Cancel, Checkpoint, ExecOptions, Graph};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::journal::StepStatus;
use crate::report::Report;
use crate::steps::{Ctx, Shared};

/// Writes a new cluster directory: a commented starter `castle.toml` (see
/// [`crate::config::template::starter`]), a `.gitignore` that keeps `secrets/`,
/// `configs/` and `.castle/` out of git, and `secrets/` (mode 0700 on Unix).
/// `dir` is created if needed; the cluster is named after it unless `name` says.
///
/// # Errors
/// [`Error::Exists`] when `dir` already holds a castle.toml or a `.gitignore`
/// (nothing is overwritten, and nothing is written then); [`Error::Io`] when a file
/// cannot be written.
pub fn init(dir: &Path, name: Option<&str>) -> Result<PathBuf> {
    let name = name
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().to_lowercase()))
        .unwrap_or_else(|| "cluster".into());
    let path = dir.join("castle.toml");
    let gitignore = dir.join(".gitignore");
    for file in [&path, &gitignore] {
        if file.exists() {
            return Err(Error::Exists { path: file.clone() });
        }
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    private_dir(&secrets).map_err(io("creating", &secrets))?;
    write_new(&path, &crate::config::template::starter(&name)).map_err(io("writing", &path))?;
    write_new(&gitignore, crate::config::template::GITIGNORE).map_err(io("writing", &gitignore))?;
    Ok(path)
}

/// Creates `path` and writes `text`, failing if it exists (no check-then-write race).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Creates the secrets directory, readable by its owner only; one that exists is
/// left as it is.
fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// How to run a create or destroy.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Skip steps done with unchanged inputs.
    pub resume: bool,
    /// Only these steps.
    pub only: Option<BTreeSet<String>>,
    /// Where events go (besides the run's log).
    pub events: Events,
    /// Cancellation (Ctrl-C).
    pub cancel: Cancel,
    /// Executor knobs; `None` for the defaults.
    pub exec: Option<ExecOptions>,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunSummary {
    /// Timings and the critical path.
    pub report: Report,
    /// The run's directory.
    pub run_dir: PathBuf,
    /// The failure, if it failed or was cancelled.
    pub error: Option<Error>,
}

/// What `plan` shows: each step and whether `create --resume` would run it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The cluster.
    pub cluster: String,
    /// Whether it runs against the lab's simulators.
    pub lab: bool,
    /// Steps in graph order.
    pub steps: Vec<PlannedStep>,
}

/// One step of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// The step.
    pub id: String,
    /// Its dependencies.
    pub deps: Vec<String>,
    /// `run` or `done`.
    pub action: String,
    /// Why.
    pub reason: String,
    /// What the systems would get, asked of them read-only.
    pub changes: Vec<crate::steps::plan::PlannedChange>,
    /// Systems that could not be asked, and what would stop the run.
    pub warnings: Vec<String>,
}

impl Plan {
    /// As text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "cluster {}{}\n",
            self.cluster,
            if self.lab { " (built-in lab)" } else { "" }
        );
        for s in &self.steps {
            let mark = if s.action == "run" { "+" } else { " " };
            let deps = if s.deps.is_empty() {
                String::new()
            } else {
                format!(" after {}", s.deps.join(", "))
            };
            let _ = writeln!(out, "{mark} {:<12} {}{deps}", s.id, s.reason);
            for c in &s.changes {
                let _ = writeln!(out, "    {:<9} {:<9} {}", c.system, c.action, c.target);
                for f in &c.fields {
                    let _ = writeln!(out, "                        {f}");
                }
            }
            for w in &s.warnings {
                let _ = writeln!(out, "    warning: {w}");
            }
        }
        let changes: usize = self.steps.iter().map(|s| s.changes.len()).sum();
        let running = self.steps.iter().filter(|s| s.action == "run").count();
        if running == 0 {
            out.push_str("no changes: every step is done with the same inputs\n");
        } else {
            let _ = writeln!(
                out,
                "{running} steps would run, {changes} changes to the systems"
            );
        }
        out
    }
}

/// What the journal and the world say about the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The cluster.
    pub cluster: String,
    /// The last run.
    pub last_run: Option<String>,
    /// Each journaled step: id, status, duration, error.
    pub steps: Vec<serde_json::Value>,
    /// Resources of the cluster still present, asked of the systems themselves; a
    /// system that could not be asked has a line saying so.
    pub leftovers: Vec<String>,
}

impl Status {
    /// Whether nothing of the cluster is left.
    pub fn nothing_left(&self) -> bool {
        self.steps.is_empty() && self.leftovers.is_empty()
    }

    /// As text.
    pub fn render(&self) -> String {
        if self.nothing_left() {
            return format!(
                "cluster {}: nothing left (no journal entries, no resources)\n",
                self.cluster
            );
        }
        let mut out = format!(
            "cluster {} (last run {})\n",
            self.cluster,
            self.last_run.as_deref().unwrap_or("none")
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "  {:<12} {:<10} {}",
                s["id"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
                s["error"].as_str().unwrap_or_default()
            );
        }
        for l in &self.leftovers {
            let _ = writeln!(out, "  still present: {l}");
        }
        out
    }
}

/// One cluster: its config, its backends, its journal directory.
pub struct Castle {
    config: Arc<Config>,
    backends: Arc<dyn Backends>,
    lab: Option<Arc<crate::lab::Lab>>,
    /// Where commands that are no run say what the user should hear of.
    notices: Events,
}

impl std::fmt::Debug for Castle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Castle")
            .field("cluster", &self.config.cluster.name)
            .field("lab", &self.lab.is_some())
            .finish()
    }
}

impl Castle {
    /// Loads and validates castle.toml; a `[lab]` section selects the simulators.
    ///
    /// # Errors
    /// The config is invalid, or the lab's state cannot be read.
    pub fn open(config_path: &Path) -> Result<Self> {
        Self::from_config(Config::load(config_path)?)
    }

    /// From castle.toml text; `cluster_dir` anchors relative paths and the journal.
    ///
    /// # Errors
    /// The config is invalid.
    pub fn from_toml(text: &str, origin: &str, cluster_dir: &Path) -> Result<Self> {
        Self::from_config(Config::from_str(text, origin, cluster_dir)?)
    }

    /// From a loaded config.
    ///
    /// # Errors
    /// The lab's state cannot be read; a real config without the `client` feature.
    pub fn from_config(config: Config) -> Result<Self> {
        let config = Arc::new(config);
        // Every client retries its own transient failures (crate::retry); the step
        // retry stays the outer layer.
        if let Some(settings) = &config.lab {
            let lab = crate::lab::Lab::open(Arc::clone(&config))?;
            let policy = crate::retry::CallRetry::standard().with_scale(settings.time_scale);
            return Ok(Self {
                backends: Arc::new(crate::retry::Retrying::new(
                    Arc::new(crate::lab::LabBackends(Arc::clone(&lab))),
                    policy,
                )),
                lab: Some(lab),
                config,
                notices: Events::new(),
            });
        }
        #[cfg(feature = "client")]
        {
            Ok(Self {
                backends: Arc::new(crate::retry::Retrying::new(
                    Arc::new(crate::backends::RealBackends),
                    crate::retry::CallRetry::standard(),
                )),
                lab: None,
                config,
                notices: Events::new(),
            })
        }
        #[cfg(not(feature = "client"))]
        {
            Err(Error::Graph("this build has no real clients (feature `client`); add a [lab] section to use the simulators".into()))
        }
    }

    /// Uses other backends (tests, embedding applications).
    pub fn with_backends(config: Config, backends: Arc<dyn Backends>) -> Self {
        Self {
            config: Arc::new(config),
            backends,
            lab: None,
            notices: Events::new(),
        }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lab's world, when this is a lab cluster.
    pub fn lab(&self) -> Option<&Arc<crate::lab::Lab>> {
        self.lab.as_ref()
    }

    /// One line about the cluster.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let cps = c.control_planes().count();
        format!(
            "cluster {}, {} nodes ({cps} control plane{}){}",
            c.cluster.name,
            c.nodes.len(),
            if cps == 1 { "" } else { "s" },
            if c.lab.is_some() {
                ", built-in lab"
            } else {
                ""
            }
        )
    }

    /// What the credentials must be allowed to do: the Proxmox token's privileges
    /// and the Tailscale OAuth client's scopes, for `castle validate`.
    pub fn requirements(&self) -> Vec<String> {
        let p = &self.config.proxmox;
        let mut out: Vec<String> = castle_proxmox::ops::required_privileges(
            p.template_vmid,
            &(p.vmid_range[0]..=p.vmid_range[1]),
            p.pool.as_deref(),
            p.storage.as_deref(),
            &p.bridge,
        )
        .into_iter()
        .map(|line| format!("proxmox token {}: {line}", p.token_id))
        .collect();
        if let Some(t) = &self.config.tailscale {
            out.push(format!(
                "tailscale oauth client: scopes {}; may assign tags {}",
                castle_tailscale::ops::REQUIRED_SCOPES.join(", "),
                t.tags.join(", ")
            ));
        }
        out
    }

    fn ctx(&self, wipe: bool) -> Arc<Ctx> {
        Arc::new(Ctx {
            config: Arc::clone(&self.config),
            backends: Arc::clone(&self.backends),
            shared: Shared::default(),
            wipe,
        })
    }

    /// The step graph.
    ///
    /// # Errors
    /// An inconsistent graph (a bug).
    pub fn graph(&self) -> Result<Graph> {
        Graph::new(crate::steps::graph(&self.ctx(false)))
    }

    /// The step ids in graph order.
    ///
    /// # Errors
    /// An inconsistent graph (a bug).
    pub fn step_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .graph()?
            .steps()
            .iter()
            .map(|s| s.id().to_string())
            .collect())
    }

    /// What `create --resume` would run, and what each real system would get:
    /// asked of the systems read-only (VMs to clone or reconfigure with the fields
    /// that change, the Vault diff, tailnet devices and the key to mint). A system
    /// that cannot be asked is a warning in the plan; a step that would not run
    /// shows the drift it would leave as a warning.
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn plan(&self) -> Result<Plan> {
        let graph = self.graph()?;
        let journal = self.peek_journal().await?;
        let runs: BTreeSet<String> = crate::engine::Executor::new(
            self.graph()?,
            ExecOptions {
                resume: true,
                ..ExecOptions::default()
            },
            Events::new(),
            Cancel::new(),
        )
        .selection(&journal)?
        .into_iter()
        .collect();
        let recorded = crate::steps::journal_clones(&journal);
        let ctx = self.ctx(false);
        let mut steps = Vec::new();
        for s in graph.steps() {
            let id = s.id();
            let done = journal.is_done_with(id, &s.fingerprint());
            let run = runs.contains(id);
            let reason = match (done, run) {
                (true, false) => "done with the same inputs".to_string(),
                (true, true) => {
                    "done, but its results live in memory and a later step that runs needs them"
                        .to_string()
                }
                (false, _) => match journal.steps.get(id) {
                    Some(r) if r.status == StepStatus::Done => "inputs changed since it ran".into(),
                    Some(r) => format!("last run {:?}", r.status).to_lowercase(),
                    None => "never ran".into(),
                },
            };
            let live = crate::steps::plan::step(&ctx, id, run, &recorded).await;
            let mut warnings = live.warnings;
            let changes = if run {
                live.changes
            } else {
                warnings.extend(live.changes.iter().map(|c| {
                    format!(
                        "drift: {} {} {} ({}); the step is done, so `create --resume` leaves it: run `castle create` to converge",
                        c.system,
                        c.action,
                        c.target,
                        c.fields.join("; ")
                    )
                }));
                Vec::new()
            };
            steps.push(PlannedStep {
                id: id.into(),
                deps: graph.deps_of(id).to_vec(),
                action: if run { "run" } else { "done" }.into(),
                reason,
                changes,
                warnings,
            });
        }
        Ok(Plan {
            cluster: self.config.cluster.name.clone(),
            lab: self.lab.is_some(),
            steps,
        })
    }

    fn checkpoint(&self) -> Option<Checkpoint> {
        let lab = Arc::clone(self.lab.as_ref()?);
        Some(Arc::new(move || {
            // A world that cannot be saved makes the journal ahead of it; the next
            // run's adoption logic still converges, so the run goes on.
            let _ = lab.save();
        }))
    }

    async fn run(&self, action: Action, options: RunOptions, wipe: bool) -> Result<RunSummary> {
        let graph = Graph::new(crate::steps::graph(&self.ctx(wipe)))?;
        let mut exec = options.exec.unwrap_or_default();
        exec.resume = options.resume;
        exec.only = options.only;
        exec.time_scale = self.config.lab.as_ref().map(|l| l.time_scale);
        let (outcome, run_dir) = crate::run::execute(
            graph,
            self.config.base_dir(),
            &self.config.cluster.name,
            self.state_backend()?,
            action,
            exec,
            options.events,
            options.cancel,
            self.checkpoint(),
        )
        .await?;
        if let Some(lab) = &self.lab {
            lab.save()?;
        }
        Ok(RunSummary {
            report: outcome.report,
            run_dir,
            error: outcome.error,
        })
    }

    /// Builds the cluster.
    ///
    /// # Errors
    /// The journal is locked or the selection invalid; step failures are in the summary.
    pub async fn create(&self, options: RunOptions) -> Result<RunSummary> {
        self.run(Action::Create, options, false).await
    }

    /// Razes the cluster; `wipe` also deletes what is kept for rebirths.
    ///
    /// # Errors
    /// As for [`create`](Self::create).
    pub async fn destroy(&self, options: RunOptions, wipe: bool) -> Result<RunSummary> {
        let mut options = options;
        options.resume = false;
        options.only = None;
        self.run(Action::Destroy, options, wipe).await
    }

    /// The journal, plus what the systems themselves still hold of the cluster
    /// (asked live, with the same clients as create and destroy).
    ///
    /// # Errors
    /// The journal cannot be read.
    pub async fn status(&self) -> Result<Status> {
        let journal = self.peek_journal().await?;
        let steps = journal
            .steps
            .iter()
            .map(|(id, r)| serde_json::json!({"id": id, "status": r.status, "duration_ms": r.duration_ms, "attempts": r.attempts, "error": r.error.as_ref().map(|e| e.message.clone())}))
            .collect();
        let recorded = crate::steps::journal_clones(&journal);
        let leftovers = crate::steps::world::leftovers(&self.ctx(false), &recorded).await;
        Ok(Status {
            cluster: self.config.cluster.name.clone(),
            last_run: journal.last_run,
            steps,
            leftovers,
        })
    }

    /// `castle doctor`: read-only checks of every system castle.toml names, each a
    /// [`Finding`](castle_probe::Finding) with what was checked and, when it fails,
    /// the fix. Nothing is written anywhere (not even the journal or the lab's
    /// world); a system that cannot be reached is a failed finding, not an error.
    pub async fn doctor(&self) -> Vec<castle_probe::Finding> {
        crate::steps::doctor::findings(&self.ctx(false)).await
    }

    /// The newest run's directory and report.
    ///
    /// # Errors
    /// The report exists but cannot be read.
    pub fn last_report(&self) -> Result<Option<(PathBuf, Report)>> {
        match crate::run::latest_run(self.config.base_dir()) {
            Some(dir) => Ok(Some((dir.clone(), crate::run::read_report(&dir)?))),
            None => Ok(None),
        }
    }

    fn vault_api(&self) -> Result<(Arc<dyn castle_vault::VaultApi>, &crate::config::Vault)> {
        let v = self
            .config
            .vault
            .as_ref()
            .ok_or_else(|| Error::Graph("castle.toml has no [vault] section".into()))?;
        let token = self.config.secrets().resolve(&v.token)?;
        let api = self
            .backends
            .vault(
                &v.address,
                v.ca_file.as_deref().map(|f| self.config.path(f)),
                &token,
            )
            .map_err(|e| Error::StepFailed {
                step: "vault".into(),
                error: e,
            })?;
        Ok((api, v))
    }

    /// The spec with its refs resolved: files and variables from the secrets
    /// directory, generated passwords (`{ vault = ... }`) from Vault, where they
    /// must exist by now.
    async fn vault_spec(
        &self,
        api: &dyn castle_vault::VaultApi,
        v: &crate::config::Vault,
    ) -> Result<castle_vault::VaultSpec> {
        let secrets = self.config.secrets();
        let mut generated = std::collections::BTreeMap::new();
        for name in v.spec.secret_refs().iter().filter_map(|r| r.generated()) {
            let value = castle_vault::generated_value(api, &v.spec, name, "password")
                .await
                .map_err(|e| vault_err(&e))?
                .ok_or_else(|| {
                    Error::Graph(format!("the generated password `{name}` is not in Vault"))
                })?;
            generated.insert(name.to_string(), value);
        }
        Ok(v.spec
            .clone()
            .resolve_secrets(|r| match r.generated() {
                Some(name) => generated.get(name).cloned().ok_or_else(|| {
                    crate::secrets::SecretError::InVault {
                        reference: r.to_string(),
                    }
                }),
                None => secrets.resolve(r),
            })?
            .with_policy_files_under(self.config.base_dir()))
    }

    /// The Vault plan: what `vault apply` would change (shows hand-made drift).
    ///
    /// # Errors
    /// Vault cannot be read.
    pub async fn vault_plan(&self) -> Result<castle_vault::Plan> {
        let (api, v) = self.vault_api()?;
        let secrets = self.config.secrets();
        // A plan never shows or compares a password: a generated one stands in unread.
        let spec = v
            .spec
            .clone()
            .resolve_secrets(|r| match r.generated() {
                Some(_) => Ok(SecretString::from(crate::steps::GENERATED_PLACEHOLDER)),
                None => secrets.resolve(r),
            })?
            .with_policy_files_under(self.config.base_dir());
        castle_vault::plan(api.as_ref(), &spec)
            .await
            .map_err(|e| vault_err(&e))
    }

    /// Applies the Vault plan and returns it.
    ///
    /// # Errors
    /// Vault refused a change.
    pub async fn vault_apply(&self) -> Result<castle_vault::Plan> {
        // Writes, like create: one run at a time on a cluster.
        self.while_locked("vault apply", self.vault_apply_locked())
            .await
    }

    async fn vault_apply_locked(&self) -> Result<castle_vault::Plan> {
        let (api, v) = self.vault_api()?;
        let mut changes = Vec::new();
        // Generated values first: connection passwords may name them.
        if v.spec.secret_refs().iter().any(|r| r.generated().is_some()) {
            let generated = v
                .spec
                .generated_part()
                .resolve_secrets(|_| Ok::<_, Error>(SecretString::from(String::new())))?;
            let plan = castle_vault::plan(api.as_ref(), &generated)
                .await
                .map_err(|e| vault_err(&e))?;
            castle_vault::apply(api.as_ref(), &generated, &plan)
                .await
                .map_err(|e| vault_err(&e))?;
            changes.extend(plan.changes);
        }
        let spec = self.vault_spec(api.as_ref(), v).await?;
        let plan = castle_vault::plan(api.as_ref(), &spec)
            .await
            .map_err(|e| vault_err(&e))?;
        castle_vault::apply(api.as_ref(), &spec, &plan)
            .await
            .map_err(|e| vault_err(&e))?;
        changes.extend(plan.changes);
        if let Some(lab) = &self.lab {
            lab.save()?;
        }
        Ok(castle_vault::Plan { changes })
    }

    /// Mints one auth key with the cluster's policy.
    ///
    /// # Errors
    /// No `[tailscale]` section, or the API refused.
    pub async fn mint_key(&self) -> Result<SecretString> {
        self.while_locked("tailscale mint-key", self.mint_key_locked())
            .await
    }

    async fn mint_key_locked(&self) -> Result<SecretString> {
        let t = self
            .config
            .tailscale
            .as_ref()
            .ok_or_else(|| Error::Graph("castle.toml has no [tailscale] section".into()))?;
        let secrets = self.config.secrets();
        let api = self
            .backends
            .tailscale(
                &t.tailnet,
                &secrets.resolve(&t.oauth_client_id)?,
                &secrets.resolve(&t.oauth_client_secret)?,
            )
            .map_err(|e| Error::StepFailed {
                step: "tailnet-key".into(),
                error: e,
            })?;
        let ctx = self.ctx(false);
        // Unique, so that cleaning up after a lost answer touches only this mint.
        let description = crate::steps::TailnetKey::fresh_description(&ctx);
        let request = crate::steps::TailnetKey::request(&ctx, description)
            .ok_or_else(|| Error::Graph("castle.toml has no [tailscale] section".into()))?;
        let key = castle_tailscale::ops::mint_rebirth_key(api.as_ref(), &request)
            .await
            .map_err(|e| Error::StepFailed {
                step: "tailnet-key".into(),
                error: crate::StepError::from_service(&e),
            })?;
        if let Some(lab) = &self.lab {
            lab.save()?;
        }
        Ok(key.key)
    }
}

/// One node's machine config as `castle talos render` shows it.
#[derive(Debug)]
pub struct RenderedConfig {
    /// The node's name in castle.toml.
    pub node: String,
    /// `controlplane` or `worker`.
    pub role: String,
    /// Its address.
    pub address: String,
    /// The config: a multi-document YAML stream holding cluster secrets.
    pub config: castle_talos::MachineConfig,
}

/// What `castle talos render` made.
#[derive(Debug)]
pub struct Rendered {
    /// One per node asked for.
    pub configs: Vec<RenderedConfig>,
    /// Whether the secrets bundle is the cluster's own (kept in Vault) or a fresh
    /// one made for this rendering alone, which the cluster will not share.
    pub bundle_is_the_clusters: bool,
}

/// Stands in for the tailnet key in a rendered config: Castle mints it at create
/// time and holds it in memory only.
pub const TAILNET_KEY_PLACEHOLDER: &str = "minted-by-castle-create-held-in-memory-only";

impl Castle {
    /// Every node's machine config (or only `node`'s) exactly as the `talos` step
    /// makes them, with the cluster's bundle from Vault when one is kept there, and
    /// a placeholder for the tailnet key. Reads only.
    ///
    /// # Errors
    /// No such node, Vault unreadable, or a config Talos would refuse (the message
    /// says which rule).
    pub async fn talos_render(&self, node: Option<&str>) -> Result<Rendered> {
        if let Some(n) = node
            && !self.config.nodes.iter().any(|x| x.name == n)
        {
            return Err(Error::Graph(format!(
                "no node named {n:?} in castle.toml (nodes: {})",
                self.config
                    .nodes
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let step = crate::steps::TalosStep(self.ctx(false));
        let as_step = |error| Error::StepFailed {
            step: "talos".into(),
            error,
        };
        let stored = step.stored_bundle().await.map_err(as_step)?;
        let bundle_is_the_clusters = stored.is_some();
        let bundle = match stored {
            Some(b) => b,
            None => castle_talos::SecretsBundle::generate(None)
                .map_err(|e| as_step(crate::StepError::from_service(&e)))?,
        };
        let key = self
            .config
            .tailscale
            .as_ref()
            .map(|_| SecretString::from(TAILNET_KEY_PLACEHOLDER));
        let configs = step
            .render_all(&bundle, key.as_ref(), node)
            .map_err(as_step)?
            .into_iter()
            .map(|(n, config)| RenderedConfig {
                role: if n.role == crate::config::Role::Controlplane {
                    "controlplane".into()
                } else {
                    "worker".into()
                },
                address: n.address().to_string(),
                node: n.name,
                config,
            })
            .collect();
        Ok(Rendered {
            configs,
            bundle_is_the_clusters,
        })
    }
}

fn vault_err(e: &castle_vault::Error) -> Error {
    Error::StepFailed {
        step: "vault".into(),
        error: crate::StepError::from_service(e),
    }
}
