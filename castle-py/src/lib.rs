//! `castle._castle`: the native half of the `castle` Python package. It only
//! connects: every call goes to castle-core (or a service crate) on one static tokio
//! runtime, with the GIL released, and Ctrl-C turned into the run's cancellation.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use castle_core::castle::{Castle as CoreCastle, RunOptions, RunSummary};
use castle_core::engine::Cancel;
use castle_core::events::{Event, Events};
use castle_core::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use secrecy::{ExposeSecret as _, SecretString};

create_exception!(
    castle,
    CastleError,
    PyException,
    "Every error Castle raises."
);
create_exception!(
    castle,
    ConfigError,
    CastleError,
    "castle.toml is malformed; the message names file:line:column and key."
);
create_exception!(
    castle,
    SecretError,
    CastleError,
    "A secret reference could not be resolved."
);
create_exception!(
    castle,
    ProviderError,
    CastleError,
    "A system Castle drives (Proxmox, Talos, Vault, Tailscale, Kubernetes) failed."
);
create_exception!(
    castle,
    TimeoutError,
    CastleError,
    "A step or wait ran out of time."
);
create_exception!(
    castle,
    Cancelled,
    CastleError,
    "The run was cancelled (Ctrl-C); resume it with create(resume=True)."
);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}

fn to_py(e: &Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Config(_) => ConfigError::new_err(msg),
        Error::Secret(_) => SecretError::new_err(msg),
        Error::Cancelled { .. } => Cancelled::new_err(msg),
        Error::StepFailed { error, .. } if error.kind == ErrorKind::Cancelled => {
            Cancelled::new_err(msg)
        }
        Error::StepFailed { error, .. } if error.kind == ErrorKind::Timeout => {
            TimeoutError::new_err(msg)
        }
        Error::StepFailed { .. } => ProviderError::new_err(msg),
        _ => CastleError::new_err(msg),
    }
}

/// Runs `work` on the runtime while the GIL is released; every 100 ms the signal
/// handlers run, and a KeyboardInterrupt cancels the run (which then ends at its
/// next safe point) instead of abandoning it.
fn block_on<T: Send + 'static>(
    py: Python<'_>,
    cancel: Option<&Cancel>,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(work.await);
    });
    let mut interrupted = false;
    let mut rx = rx;
    loop {
        let (got, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        match got {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    match cancel {
                        Some(c) if !interrupted => {
                            c.cancel("interrupted (Ctrl-C)");
                            interrupted = true;
                        }
                        _ => return Err(e),
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CastleError::new_err("the run stopped unexpectedly"));
            }
        }
    }
}

fn json_to_py(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

fn value_to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v).map_err(|e| CastleError::new_err(e.to_string()))?;
    json_to_py(py, &text)
}

/// A cluster's castle.toml, loaded and validated.
#[pyclass(module = "castle._castle", frozen)]
struct Config {
    text: String,
    origin: String,
    dir: PathBuf,
    name: String,
    lab: bool,
}

#[pymethods]
impl Config {
    /// Reads and validates castle.toml; relative paths are relative to its directory.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new_err(format!("{}: cannot read: {e}", path.display())))?;
        let dir = path
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(text, path.display().to_string(), dir)
    }

    /// Parses castle.toml text; `base_dir` anchors relative paths and the journal.
    #[staticmethod]
    #[pyo3(signature = (text, base_dir = None))]
    fn from_toml(text: String, base_dir: Option<PathBuf>) -> PyResult<Self> {
        Self::parse(
            text,
            "castle.toml".into(),
            base_dir.unwrap_or_else(|| PathBuf::from(".")),
        )
    }

    /// The cluster's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether it runs against the built-in lab's simulators.
    #[getter]
    fn lab(&self) -> bool {
        self.lab
    }

    fn __repr__(&self) -> String {
        format!(
            "Config(name={:?}, origin={:?}, lab={})",
            self.name,
            self.origin,
            if self.lab { "True" } else { "False" }
        )
    }
}

impl Config {
    fn parse(text: String, origin: String, dir: PathBuf) -> PyResult<Self> {
        let c = castle_core::config::Config::from_str(&text, &origin, &dir)
            .map_err(|e| to_py(&Error::Config(e)))?;
        Ok(Self {
            name: c.cluster.name.clone(),
            lab: c.lab.is_some(),
            text,
            origin,
            dir,
        })
    }
}

/// What a create or destroy did: step timings and the critical path.
#[pyclass(module = "castle._castle", frozen)]
struct Report {
    #[pyo3(get)]
    run_id: String,
    #[pyo3(get)]
    action: String,
    #[pyo3(get)]
    status: String,
    #[pyo3(get)]
    makespan_ms: u64,
    #[pyo3(get)]
    critical_path: Vec<String>,
    #[pyo3(get)]
    run_dir: String,
    steps_json: String,
}

#[pymethods]
impl Report {
    /// Every step: id, deps, status, start_ms, end_ms, duration_ms, attempts, error.
    #[getter]
    fn steps(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &self.steps_json)
    }

    /// The aligned text table the CLI prints.
    fn table(&self) -> PyResult<String> {
        let steps = serde_json::from_str(&self.steps_json)
            .map_err(|e| CastleError::new_err(e.to_string()))?;
        Ok(
            castle_core::report::Report::build(&self.run_id, &self.action, "", &self.status, steps)
                .table(),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Report(action={:?}, status={:?}, makespan_ms={}, critical_path={:?})",
            self.action, self.status, self.makespan_ms, self.critical_path
        )
    }
}

impl Report {
    fn from_summary(s: &RunSummary) -> Self {
        Self {
            run_id: s.report.run_id.clone(),
            action: s.report.action.clone(),
            status: s.report.status.clone(),
            makespan_ms: s.report.makespan_ms,
            critical_path: s.report.critical_path.clone(),
            run_dir: s.run_dir.display().to_string(),
            steps_json: serde_json::to_string(&s.report.steps).unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// One cluster: plan, create, destroy and status, as the CLI offers them.
#[pyclass(module = "castle._castle", frozen)]
struct Castle {
    inner: Arc<CoreCastle>,
    name: String,
}

#[pymethods]
impl Castle {
    #[new]
    fn new(config: &Config) -> PyResult<Self> {
        let inner = CoreCastle::from_toml(&config.text, &config.origin, &config.dir)
            .map_err(|e| to_py(&e))?;
        Ok(Self {
            inner: Arc::new(inner),
            name: config.name.clone(),
        })
    }

    /// What `create(resume=True)` would run, step by step.
    fn plan(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let c = Arc::clone(&self.inner);
        let plan = block_on(py, None, async move { c.plan().await })?.map_err(|e| to_py(&e))?;
        value_to_py(py, &plan)
    }

    /// Builds the cluster. `on_event` receives each event as a dict. Ctrl-C cancels
    /// at the next safe point and raises `Cancelled`.
    #[pyo3(signature = (resume = false, on_event = None))]
    fn create(
        &self,
        py: Python<'_>,
        resume: bool,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Report> {
        let cancel = Cancel::new();
        let options = RunOptions {
            resume,
            events: events(on_event),
            cancel: cancel.clone(),
            ..RunOptions::default()
        };
        let c = Arc::clone(&self.inner);
        let summary = block_on(py, Some(&cancel), async move { c.create(options).await })?
            .map_err(|e| to_py(&e))?;
        finish(summary)
    }

    /// Razes the cluster; `wipe` also deletes what is kept for rebirths.
    #[pyo3(signature = (wipe = false, on_event = None))]
    fn destroy(&self, py: Python<'_>, wipe: bool, on_event: Option<Py<PyAny>>) -> PyResult<Report> {
        let cancel = Cancel::new();
        let options = RunOptions {
            events: events(on_event),
            cancel: cancel.clone(),
            ..RunOptions::default()
        };
        let c = Arc::clone(&self.inner);
        let summary = block_on(
            py,
            Some(&cancel),
            async move { c.destroy(options, wipe).await },
        )?
        .map_err(|e| to_py(&e))?;
        finish(summary)
    }

    /// The journal and (in the lab) what still exists: `nothing_left` says it all.
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let c = Arc::clone(&self.inner);
        let status = block_on(py, None, async move { c.status().await })?.map_err(|e| to_py(&e))?;
        let mut v =
            serde_json::to_value(&status).map_err(|e| CastleError::new_err(e.to_string()))?;
        v["nothing_left"] = serde_json::Value::Bool(status.nothing_left());
        value_to_py(py, &v)
    }

    /// The step ids in graph order.
    fn steps(&self) -> PyResult<Vec<String>> {
        self.inner.step_ids().map_err(|e| to_py(&e))
    }

    fn __repr__(&self) -> String {
        format!("Castle({:?})", self.name)
    }
}

fn events(on_event: Option<Py<PyAny>>) -> Events {
    let mut events = Events::new();
    if let Some(cb) = on_event {
        events.push(Arc::new(move |e: &Event| {
            let Ok(text) = serde_json::to_string(e) else {
                return;
            };
            Python::attach(|py| {
                if let Err(err) = json_to_py(py, &text).and_then(|obj| cb.call1(py, (obj,))) {
                    err.print(py);
                }
            });
        }));
    }
    events
}

fn finish(summary: RunSummary) -> PyResult<Report> {
    match &summary.error {
        None => Ok(Report::from_summary(&summary)),
        Some(e) => Err(to_py(e)),
    }
}

/// A Talos secrets bundle; its repr never shows key material.
#[pyclass(module = "castle._castle", frozen)]
struct TalosSecrets {
    inner: castle_talos::SecretsBundle,
}

#[pymethods]
impl TalosSecrets {
    /// The cluster id (not secret).
    #[getter]
    fn cluster_id(&self) -> String {
        self.inner.cluster_id.clone()
    }

    /// The bundle in talosctl's secrets.yaml layout: every key, in the clear.
    fn reveal_yaml(&self) -> PyResult<String> {
        Ok(self
            .inner
            .to_yaml()
            .map_err(|e| ProviderError::new_err(e.to_string()))?
            .expose_secret()
            .to_string())
    }

    fn __repr__(&self) -> String {
        format!(
            "TalosSecrets(cluster_id={:?}, keys=<redacted>)",
            self.inner.cluster_id
        )
    }
}

/// `talosctl gen secrets`: a new bundle (the service-account key too, unless given as PEM).
#[pyfunction]
#[pyo3(signature = (service_account_key = None))]
fn talos_generate_secrets(service_account_key: Option<String>) -> PyResult<TalosSecrets> {
    let inner = castle_talos::SecretsBundle::generate(service_account_key.map(SecretString::from))
        .map_err(|e| ProviderError::new_err(e.to_string()))?;
    Ok(TalosSecrets { inner })
}

/// The machine config of one node, as the talos step renders it (a YAML stream).
#[pyfunction]
#[pyo3(signature = (secrets, cluster_name, endpoint, hostname, role, address, gateway, kubernetes_version = "1.34.1", installer_image = "ghcr.io/siderolabs/installer:v1.12.0", install_disk = "/dev/sda"))]
#[allow(clippy::too_many_arguments)]
fn talos_machine_config(
    secrets: &TalosSecrets,
    cluster_name: String,
    endpoint: String,
    hostname: String,
    role: &str,
    address: String,
    gateway: String,
    kubernetes_version: &str,
    installer_image: &str,
    install_disk: &str,
) -> PyResult<String> {
    let role = match role {
        "controlplane" => castle_talos::Role::Controlplane,
        "worker" => castle_talos::Role::Worker,
        other => {
            return Err(ConfigError::new_err(format!(
                "role must be controlplane or worker, not {other:?}"
            )));
        }
    };
    let input = castle_talos::MachineConfigInput {
        cluster_name,
        endpoint,
        kubernetes_version: kubernetes_version.into(),
        install_disk: install_disk.into(),
        installer_image: installer_image.into(),
        api_cert_sans: vec![],
        service_account_issuers: vec![],
        api_audiences: vec![],
        jwks_uri: None,
        node: castle_talos::NodeInput {
            hostname,
            role,
            address,
            gateway,
            nameservers: vec![],
            link: "ens18".into(),
        },
        patches: vec![],
        extra_documents: vec![],
        tailscale: None,
    };
    let cfg = input
        .render(&secrets.inner)
        .map_err(|e| ProviderError::new_err(e.to_string()))?;
    Ok(cfg.rendered.expose_secret().to_string())
}

fn vault_spec(spec_toml: &str) -> PyResult<castle_vault::VaultSpec> {
    let spec: castle_vault::VaultSpec<String> =
        toml::from_str(spec_toml).map_err(|e| ConfigError::new_err(format!("vault spec: {e}")))?;
    spec.resolve_secrets(|s| Ok::<_, PyErr>(SecretString::from(s.clone())))
}

fn vault_client(address: &str, token: String) -> PyResult<castle_vault::VaultClient> {
    castle_vault::VaultClient::new(castle_vault::VaultSettings::new(
        address,
        SecretString::from(token),
    ))
    .map_err(|e| ProviderError::new_err(e.to_string()))
}

/// Diffs a Vault spec (TOML, the `[vault.spec]` table's content) against a live Vault.
#[pyfunction]
fn vault_plan(
    py: Python<'_>,
    address: &str,
    token: String,
    spec_toml: &str,
) -> PyResult<Py<PyAny>> {
    let (client, spec) = (vault_client(address, token)?, vault_spec(spec_toml)?);
    let plan = block_on(
        py,
        None,
        async move { castle_vault::plan(&client, &spec).await },
    )?
    .map_err(|e| ProviderError::new_err(e.to_string()))?;
    value_to_py(py, &plan)
}

/// Applies a Vault spec and returns the plan it carried out.
#[pyfunction]
fn vault_apply(
    py: Python<'_>,
    address: &str,
    token: String,
    spec_toml: &str,
) -> PyResult<Py<PyAny>> {
    let (client, spec) = (vault_client(address, token)?, vault_spec(spec_toml)?);
    let plan = block_on(py, None, async move {
        let plan = castle_vault::plan(&client, &spec).await?;
        castle_vault::apply(&client, &spec, &plan).await?;
        Ok::<_, castle_vault::Error>(plan)
    })?
    .map_err(|e| ProviderError::new_err(e.to_string()))?;
    value_to_py(py, &plan)
}

/// A Tailscale auth key; `str()` and `repr()` never show it, `reveal()` does.
#[pyclass(module = "castle._castle", frozen)]
struct AuthKey {
    #[pyo3(get)]
    id: String,
    #[pyo3(get)]
    expires: String,
    key: SecretString,
}

#[pymethods]
impl AuthKey {
    /// The key itself.
    fn reveal(&self) -> String {
        self.key.expose_secret().to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "AuthKey(id={:?}, expires={:?}, key=<redacted>)",
            self.id, self.expires
        )
    }
    fn __str__(&self) -> String {
        self.__repr__()
    }
}

/// Mints one reusable, ephemeral, preauthorized, tagged auth key with an OAuth client.
#[pyfunction]
#[pyo3(signature = (client_id, client_secret, tags, ttl_seconds = 3600, tailnet = "-", base_url = "https://api.tailscale.com"))]
fn tailscale_mint_key(
    py: Python<'_>,
    client_id: String,
    client_secret: String,
    tags: Vec<String>,
    ttl_seconds: u64,
    tailnet: &str,
    base_url: &str,
) -> PyResult<AuthKey> {
    let mut settings = castle_tailscale::TailscaleSettings::new(
        SecretString::from(client_id),
        SecretString::from(client_secret),
    );
    settings.tailnet = tailnet.into();
    settings.base_url = base_url.into();
    let client = castle_tailscale::TailscaleClient::new(settings)
        .map_err(|e| ProviderError::new_err(e.to_string()))?;
    let request = castle_tailscale::KeyRequest {
        reusable: true,
        ephemeral: true,
        preauthorized: true,
        tags,
        expiry_seconds: ttl_seconds,
        description: "castle (python)".into(),
    };
    let key = block_on(py, None, async move {
        castle_tailscale::ops::mint_rebirth_key(&client, &request).await
    })?
    .map_err(|e| ProviderError::new_err(e.to_string()))?;
    Ok(AuthKey {
        id: key.id,
        expires: key.expires,
        key: key.key,
    })
}

/// Lists the VMs of a Proxmox VE cluster.
#[pyfunction]
#[pyo3(signature = (endpoint, token_id, token, insecure = false))]
fn proxmox_list_vms(
    py: Python<'_>,
    endpoint: String,
    token_id: String,
    token: String,
    insecure: bool,
) -> PyResult<Py<PyAny>> {
    let settings =
        castle_proxmox::ProxmoxSettings::new(endpoint, token_id, SecretString::from(token))
            .with_insecure(insecure);
    let client = castle_proxmox::ProxmoxClient::new(&settings)
        .map_err(|e| ProviderError::new_err(e.to_string()))?;
    let vms = block_on(py, None, async move {
        castle_proxmox::ProxmoxApi::list_vms(&client).await
    })?
    .map_err(|e| ProviderError::new_err(e.to_string()))?;
    value_to_py(py, &vms)
}

#[pymodule]
fn _castle(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CastleError", py.get_type::<CastleError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("SecretError", py.get_type::<SecretError>())?;
    m.add("ProviderError", py.get_type::<ProviderError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add_class::<Config>()?;
    m.add_class::<Castle>()?;
    m.add_class::<Report>()?;
    m.add_class::<TalosSecrets>()?;
    m.add_class::<AuthKey>()?;
    m.add_function(wrap_pyfunction!(talos_generate_secrets, m)?)?;
    m.add_function(wrap_pyfunction!(talos_machine_config, m)?)?;
    m.add_function(wrap_pyfunction!(vault_plan, m)?)?;
    m.add_function(wrap_pyfunction!(vault_apply, m)?)?;
    m.add_function(wrap_pyfunction!(tailscale_mint_key, m)?)?;
    m.add_function(wrap_pyfunction!(proxmox_list_vms, m)?)?;
    Ok(())
}
