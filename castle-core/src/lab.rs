//! The built-in lab: the whole rebirth against the five stateful simulators, with a
//! latency model calibrated from the reference setup on a compressed clock. Its
//! world persists in `<cluster dir>/.castle/lab/state.json` (mode 0600) so that
//! `create`, `--resume` and `destroy` in separate processes see the same world.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use castle_kube::{ClusterApi, MockCluster};
use castle_proxmox::{MockProxmox, ProxmoxApi};
use castle_sim::Faults;
use castle_tailscale::{MockTailscale, TailscaleApi};
use castle_talos::{ApplyMode, MockTalos, NodeConn, ServiceHealth, TalosApi};
use castle_vault::{MockVault, VaultApi};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::backends::Backends;
use crate::config::{Config, LabFault, Proxmox};
use crate::error::{Error, StepError};

/// The simulated world of one lab cluster.
pub struct Lab {
    config: Arc<Config>,
    state_file: PathBuf,
    /// One writer of the state file at a time (the executor's checkpoints and the
    /// Proxmox calls both save).
    saving: std::sync::Mutex<()>,
    /// Which opening of this lab world this is (1 for a fresh world): faults are
    /// drawn from a stream of the seed and this, so a resume does not replay the
    /// faults that stopped the run before it.
    run: u64,
    /// Proxmox VE.
    pub proxmox: MockProxmox,
    /// The Talos nodes.
    pub talos: MockTalos,
    /// Vault.
    pub vault: MockVault,
    /// The tailnet's control plane.
    pub tailscale: MockTailscale,
    /// The cluster's API server.
    pub cluster: MockCluster,
    /// The Vault the cluster's External Secrets reaches, when it is not the lab's
    /// own (a test running the lab against a real OpenBao).
    eso_vault: std::sync::Mutex<Option<Arc<dyn VaultApi>>>,
    /// CPU time spent in the simulators (their calls and the world's saves), in
    /// nanoseconds: what a run against real systems would not spend.
    simulator_cpu: AtomicU64,
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A simulator call whose every poll adds its thread CPU time to a meter. Each
/// poll runs on one thread and nothing else runs on it meanwhile, so the sum is
/// the call's own CPU, not the time it waited.
struct Metered<'a, F> {
    inner: std::pin::Pin<Box<F>>,
    meter: &'a AtomicU64,
}

impl<F: std::future::Future> std::future::Future for Metered<'_, F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let started = thread_cpu();
        let polled = self.inner.as_mut().poll(cx);
        let spent = thread_cpu().saturating_sub(started);
        self.meter.fetch_add(
            u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        polled
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Lab {
    /// The lab of a config with a `[lab]` section, restored from its state file.
    ///
    /// # Errors
    /// The state file exists but cannot be read, or a lab secret is missing.
    pub fn open(config: Arc<Config>) -> Result<Arc<Self>, Error> {
        let settings = config
            .lab
            .clone()
            .ok_or_else(|| Error::Graph("not a lab config: it has no [lab] section".into()))?;
        let scale = settings.time_scale;
        let state_file =
            crate::journal::Journal::state_dir(config.base_dir()).join("lab/state.json");
        // The saved world counts its openings; an unreadable file is reported below.
        let run = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("runs").and_then(Value::as_u64))
            .unwrap_or(0)
            + 1;
        // Each simulator its own stream of this run's faults.
        let faults = Faults::for_run(settings.seed, run, settings.transient_fault_rate);
        let profile = match settings.proxmox_server {
            crate::config::LabProxmoxServer::Current => castle_proxmox::ServerProfile::Current,
            crate::config::LabProxmoxServer::Older => castle_proxmox::ServerProfile::Older,
        };
        let mut proxmox = MockProxmox::new()
            .with_latency(castle_proxmox::Latency::lab().scaled(scale))
            .with_faults(faults)
            .with_profile(profile);
        if let Some(pool) = &settings.proxmox_token_pool {
            proxmox = proxmox.with_pool_scoped_token(pool);
        }
        let lab = Self {
            state_file,
            saving: std::sync::Mutex::new(()),
            run,
            proxmox,
            talos: MockTalos::new()
                .with_latency(castle_talos::Latency::lab().scaled(scale))
                .with_faults(faults.stream(1)),
            vault: MockVault::new()
                .with_latency(castle_vault::Latency::lab().scaled(scale))
                .with_faults(faults.stream(2)),
            tailscale: MockTailscale::new()
                .with_latency(castle_tailscale::Latency::lab().scaled(scale))
                .with_faults(faults.stream(3)),
            cluster: MockCluster::new()
                .with_latency(castle_kube::Latency::lab().scaled(scale))
                .with_faults(faults.stream(4)),
            eso_vault: std::sync::Mutex::new(None),
            simulator_cpu: AtomicU64::new(0),
            config,
        };
        lab.cluster.set_reachable(false);
        match std::fs::read(&lab.state_file) {
            Ok(bytes) => {
                let state: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Graph(format!(
                        "{}: {e}; delete it to start the lab afresh",
                        lab.state_file.display()
                    ))
                })?;
                let bad = |e: String| {
                    Error::Graph(format!(
                        "{}: {e}; delete it to start the lab afresh",
                        lab.state_file.display()
                    ))
                };
                lab.proxmox
                    .restore(&state["proxmox"])
                    .map_err(|e| bad(e.to_string()))?;
                lab.talos
                    .restore(&state["talos"])
                    .map_err(|e| bad(e.to_string()))?;
                lab.vault
                    .restore(&state["vault"])
                    .map_err(|e| bad(e.to_string()))?;
                lab.tailscale
                    .restore(&state["tailscale"])
                    .map_err(|e| bad(e.to_string()))?;
                lab.cluster
                    .restore(&state["cluster"])
                    .map_err(|e| bad(e.to_string()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => lab.seed()?,
            Err(e) => return Err(io_err("reading", &lab.state_file)(e)),
        }
        // The repository and the chart repositories hold what the config says now,
        // whatever a saved world remembers of them.
        let git_url = lab
            .config
            .components
            .flux
            .as_ref()
            .and_then(|f| f.git_url.clone())
            .unwrap_or_default();
        lab.cluster.set_git_tree(&git_url, git_tree(&lab.config));
        for c in lab.config.lab_charts().map_err(Error::Graph)? {
            lab.cluster.add_chart(castle_kube::Chart {
                repo: c.repo,
                name: c.name,
                version: c.version,
                objects: c.objects,
                values_schema: c.values_schema,
            });
        }
        // Shared state in the lab's own Vault: its KV v2 mount exists, as an
        // operator makes it once before a team shares state there.
        if lab.config.state.backend == crate::config::StateBackendKind::Vault
            && lab.config.state.address.is_none()
        {
            lab.vault.enable_kv_v2(lab.config.state.mount());
        }
        lab.inject()?;
        lab.restore_signer();
        lab.restore_node_pki();
        Ok(Arc::new(lab))
    }

    fn injected(&self, fault: LabFault) -> bool {
        self.config
            .lab
            .as_ref()
            .is_some_and(|l| l.inject.contains(&fault))
    }

    /// Shows the failures `[lab] inject` lists, and heals those it no longer lists
    /// (a world saved under an injection must not stay broken without it).
    fn inject(&self) -> Result<(), Error> {
        let world = |e: castle_proxmox::Error| Error::Graph(format!("the lab's Proxmox: {e}"));
        let p = &self.config.proxmox;
        self.proxmox.clear_revoked_privileges();
        if self.injected(LabFault::ProxmoxMissingPrivilege) {
            self.proxmox
                .revoke_privilege(&format!("/vms/{}", p.template_vmid), "VM.Clone");
        }
        let has_template = self.proxmox.snapshot()["vms"]
            .get(p.template_vmid.to_string())
            .is_some();
        match (
            self.injected(LabFault::ProxmoxMissingTemplate),
            has_template,
        ) {
            (true, true) => self.proxmox.remove_vm(p.template_vmid).map_err(world)?,
            (false, false) => self
                .proxmox
                .add_template(p.template_vmid, LAB_TEMPLATE, 10)
                .map_err(world)?,
            _ => {}
        }
        self.proxmox
            .set_node_online(&p.node, !self.injected(LabFault::ProxmoxNodeOffline))
            .map_err(world)?;
        let storage = p.storage.as_deref().unwrap_or("local-lvm");
        if self.injected(LabFault::ProxmoxStorageFull) {
            self.proxmox
                .set_storage_free_gib(storage, 0)
                .map_err(world)?;
        } else {
            self.proxmox.clear_storage_fill(storage).map_err(world)?;
        }
        if let Some(t) = &self.config.tailscale {
            let id = self.config.secrets().resolve(&t.oauth_client_id)?;
            let scopes: &[&str] = if self.injected(LabFault::TailscaleNarrowScopes) {
                &["devices:core:read"]
            } else {
                &LAB_OAUTH_SCOPES
            };
            self.tailscale
                .set_client_scopes(id.expose_secret(), scopes)
                .map_err(|e| Error::Graph(format!("the lab's tailnet: {e}")))?;
        }
        self.vault.set_sealed(self.injected(LabFault::VaultSealed));
        let policy = |name: &str, text: &str| {
            self.vault
                .put_policy(name, text)
                .map_err(|e| Error::Graph(format!("the lab's Vault: {e}")))
        };
        if self.injected(LabFault::VaultMissingCapability) {
            policy("castle-lab-narrow", LAB_NARROW_POLICY)?;
            self.vault.set_token_policies(&["castle-lab-narrow"], None);
        } else if self.injected(LabFault::VaultShortToken) {
            policy("castle-lab-admin", LAB_ADMIN_POLICY)?;
            self.vault
                .set_token_policies(&["castle-lab-admin"], Some((600, false)));
        } else {
            self.vault.set_root_token();
        }
        Ok(())
    }

    /// A new world: the golden template and the OAuth client the lab's secrets name.
    fn seed(&self) -> Result<(), Error> {
        let p = &self.config.proxmox;
        // The lab's Vault knows the token its secrets hold when the world is made;
        // a run presenting another later is refused as a real server refuses it.
        if let Some(v) = &self.config.vault {
            let token = self.config.secrets().resolve(&v.token)?;
            self.vault.set_token(&token);
        }
        self.proxmox
            .set_api_token(&p.token_id, &self.config.secrets().resolve(&p.token)?);
        self.proxmox
            .add_template(p.template_vmid, LAB_TEMPLATE, 10)
            .map_err(|e| Error::Graph(e.to_string()))?;
        // A pool-scoped token can clone only a template it may see: the admin put
        // it into the pool.
        if let Some(pool) = self
            .config
            .lab
            .as_ref()
            .and_then(|l| l.proxmox_token_pool.as_ref())
        {
            self.proxmox
                .add_to_pool(p.template_vmid, pool)
                .map_err(|e| Error::Graph(e.to_string()))?;
        }
        if let Some(t) = &self.config.tailscale {
            let secrets = self.config.secrets();
            let id = secrets.resolve(&t.oauth_client_id)?;
            let secret = secrets.resolve(&t.oauth_client_secret)?;
            let tags: Vec<&str> = t.tags.iter().map(String::as_str).collect();
            self.tailscale
                .add_oauth_client(id.expose_secret(), &secret, &LAB_OAUTH_SCOPES, &tags);
        }
        Ok(())
    }

    /// The cluster's External Secrets logs in to `vault` instead of the lab's own
    /// (for a lab whose Vault is a real server).
    pub fn set_eso_vault(&self, vault: Arc<dyn VaultApi>) {
        *self
            .eso_vault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(vault);
    }

    /// The CPU time the simulators have spent so far in this process: their calls
    /// (latency modelled, faults drawn, controllers reconciled) and the world's
    /// saves. A run's CPU time less this is Castle's own.
    pub fn simulator_cpu(&self) -> Duration {
        Duration::from_nanos(self.simulator_cpu.load(Ordering::Relaxed))
    }

    /// Runs a simulator call, metering its CPU time.
    fn metered<'a, F: std::future::Future + 'a>(
        &'a self,
        call: F,
    ) -> impl std::future::Future<Output = F::Output> + 'a {
        Metered {
            inner: Box::pin(call),
            meter: &self.simulator_cpu,
        }
    }

    /// Writes the world to its state file (mode 0600, atomically).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self) -> Result<(), Error> {
        let started = thread_cpu();
        let saved = self.write_state();
        let spent = thread_cpu().saturating_sub(started);
        self.simulator_cpu.fetch_add(
            u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        saved
    }

    fn write_state(&self) -> Result<(), Error> {
        let _one_writer = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = json!({
            "runs": self.run,
            "proxmox": self.proxmox.snapshot(),
            "talos": self.talos.snapshot(),
            "vault": self.vault.snapshot(),
            "tailscale": self.tailscale.snapshot(),
            "cluster": self.cluster.snapshot(),
        });
        let dir = self
            .state_file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let tmp = self.state_file.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("writing", &tmp))?;
        f.write_all(state.to_string().as_bytes())
            .map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &self.state_file).map_err(io_err("writing", &self.state_file))
    }

    /// Couples the simulators as the real world couples the systems: a running VM
    /// is a booted Talos node; a deleted one takes its node, its tailnet presence and,
    /// when the last one goes, the cluster's API server with it.
    async fn sync(&self) {
        let Ok(vms) = self.proxmox.list_vms().await else {
            return;
        };
        let mut any = false;
        for n in &self.config.nodes {
            match vms.iter().find(|v| v.vmid == n.vmid) {
                Some(vm) if vm.status == castle_proxmox::PowerState::Running => {
                    any = true;
                    self.talos.power_on(n.address());
                }
                Some(_) => any = true,
                None => {
                    self.talos.power_off(n.address());
                    self.tailscale
                        .device_offline(&self.config.hostname(&n.name));
                }
            }
        }
        if !any {
            self.cluster.reset();
        }
    }
}

impl Lab {
    /// A node whose kubelet is healthy registers with the cluster's API server once
    /// etcd was bootstrapped, and is Ready (the lab runs no CNI to wait for).
    fn join(&self, n: &crate::config::Node) {
        if self.talos.is_bootstrapped() && self.talos.kubelet_healthy(n.address()) {
            self.cluster.add_node(&n.name);
        }
    }

    /// kube-apiserver signs service-account tokens with the key and issuer of the
    /// control plane's machine config (`cluster.serviceAccount.key`, the
    /// `service-account-issuer` extra arg, else the endpoint, as Talos sets them).
    fn api_server_signer(&self, config: &SecretString) {
        let rendered = castle_talos::MachineConfig {
            rendered: config.clone(),
            digest: String::new(),
        };
        let Ok(docs) = rendered.expose_documents() else {
            return;
        };
        let Some(cluster) = docs.first().and_then(|d| d.get("cluster")) else {
            return;
        };
        let Some(key) = cluster
            .pointer("/serviceAccount/key")
            .and_then(Value::as_str)
            .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
            .and_then(|k| String::from_utf8(k).ok())
        else {
            return;
        };
        let issuer = match cluster.pointer("/apiServer/extraArgs/service-account-issuer") {
            Some(Value::String(s)) => s.split(',').next().map(str::to_string),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
        .or_else(|| {
            cluster
                .pointer("/controlPlane/endpoint")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
        // A key the API server cannot use leaves it without a signer: TokenRequest
        // then fails, as it would.
        let _ = self
            .cluster
            .set_service_account_signer(&SecretString::from(key), &issuer);
    }

    /// A restored world's API server still has its key, and one that starts in a
    /// resumed run gets it: the one Vault keeps (the machine configs themselves are
    /// kept as digests only).
    fn restore_signer(&self) {
        let Some(v) = &self.config.vault else { return };
        let Some(g) = v
            .service_account_key
            .as_ref()
            .and_then(|name| v.spec.generated.iter().find(|g| &g.name == name))
        else {
            return;
        };
        if !self.talos.is_bootstrapped() {
            return;
        }
        let kv = self.vault.snapshot();
        let key = kv
            .pointer(&format!(
                "/kv/{}~1data~1{}",
                g.mount,
                g.path.replace('/', "~1")
            ))
            .and_then(Value::as_array)
            .and_then(|versions| versions.last())
            .and_then(|d| d.get("private_key"))
            .and_then(Value::as_str);
        if let Some(key) = key {
            let _ = self
                .cluster
                .set_service_account_signer(&SecretString::from(key), self.config.token_issuer());
        }
    }

    /// A restored world's control planes still hold their Kubernetes CA on disk:
    /// the lab takes its key from the bundle Vault keeps (the snapshot keeps no key
    /// material), so a resumed bootstrap fetches the kubeconfig without a node's
    /// config being applied again.
    fn restore_node_pki(&self) {
        let Some((mount, path)) = crate::steps::bundle_location(&self.config) else {
            return;
        };
        let kv = self.vault.snapshot();
        let Some(yaml) = kv
            .pointer(&format!("/kv/{}~1data~1{}", mount, path.replace('/', "~1")))
            .and_then(Value::as_array)
            .and_then(|versions| versions.last())
            .and_then(|d| d.get("bundle"))
            .and_then(Value::as_str)
        else {
            return;
        };
        let Ok(bundle) =
            castle_talos::SecretsBundle::from_yaml(&SecretString::from(yaml.to_string()))
        else {
            return;
        };
        for n in self.config.control_planes() {
            self.talos
                .recover_k8s_ca_key(n.address(), &bundle.k8s.crt, &bundle.k8s.key);
        }
    }

    /// External Secrets' store controller, as far as the lab needs it
    /// (external-secrets `pkg/controllers/secretstore/common.go` and
    /// `pkg/provider/vault`): a ClusterSecretStore whose Vault auth is
    /// `jwt.kubernetesServiceAccountToken` gets a token by TokenRequest for its
    /// service account, with the audiences of `serviceAccountRef` plus
    /// `kubernetesServiceAccountToken.audiences` (default `vault`) for
    /// `expirationSeconds` (default 600) (`auth.go` `createServiceAccountToken`,
    /// `auth_jwt.go`), and logs in at `auth/<path>/login`. The store is then Ready
    /// (reason `Valid`, "store validated") or not (`InvalidProviderConfig`, "unable
    /// to create client"), the Vault's refusal being the reason.
    async fn reconcile_secret_store(&self, store: &Value) {
        let r = castle_kube::ObjectRef::of(store);
        // ESO requeues a store that failed; the lab's faults are transient too.
        let mut outcome = self.eso_login(store).await;
        for _ in 0..4 {
            if outcome.is_ok() {
                break;
            }
            outcome = self.eso_login(store).await;
        }
        let condition = match outcome {
            Ok(()) => {
                json!({"type": "Ready", "status": "True", "reason": "Valid", "message": "store validated"})
            }
            Err(_) => {
                json!({"type": "Ready", "status": "False", "reason": "InvalidProviderConfig", "message": "unable to create client"})
            }
        };
        let _ = self.cluster.set_status(
            &r,
            json!({"conditions": [condition], "capabilities": "ReadWrite"}),
        );
    }

    /// What ESO's Vault client does before the store is valid: reach the server
    /// (trusting its CA through `caBundle`), get the token, log in.
    async fn eso_login(&self, store: &Value) -> Result<(), String> {
        let vault = store
            .pointer("/spec/provider/vault")
            .ok_or("not a Vault store")?;
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let Some(v) = &self.config.vault else {
            return Err("the lab has no Vault".into());
        };
        if text(vault, "/server").as_deref() != Some(v.address.as_str()) {
            return Err(format!(
                "dial tcp: lookup {}: no such host",
                text(vault, "/server").unwrap_or_default()
            ));
        }
        // The lab's Vault presents a certificate of `[vault] ca_file`'s CA.
        if let Some(ca) = &v.ca_file {
            let want = std::fs::read_to_string(self.config.path(ca)).unwrap_or_default();
            let given = text(vault, "/caBundle")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            if !pem_certificates(&want)
                .iter()
                .all(|c| pem_certificates(&given).contains(c))
            {
                return Err(
                    "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                        .into(),
                );
            }
        }
        let jwt = vault
            .pointer("/auth/jwt")
            .ok_or("the lab models JWT auth only")?;
        let sat = jwt
            .get("kubernetesServiceAccountToken")
            .ok_or("neither `secretRef` nor `kubernetesServiceAccountToken` was supplied as token source for jwt authentication")?;
        let account = sat.get("serviceAccountRef").ok_or("no serviceAccountRef")?;
        let strings = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
        };
        let mut audiences = strings(account.get("audiences")).unwrap_or_default();
        audiences.extend(strings(sat.get("audiences")).unwrap_or_else(|| vec!["vault".into()]));
        let seconds = sat
            .get("expirationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(600);
        let name = text(account, "/name").unwrap_or_default();
        let namespace = text(account, "/namespace").unwrap_or_default();
        let token = self
            .cluster
            .create_token(&namespace, &name, &audiences, seconds)
            .await
            .map_err(|e| e.to_string())?;
        let path = text(jwt, "/path").unwrap_or_else(|| "jwt".into());
        let vault: Arc<dyn VaultApi> = self
            .eso_vault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| Arc::new(self.vault.clone()));
        vault
            .write(
                &format!("auth/{path}/login"),
                json!({"role": text(jwt, "/role").unwrap_or_default(), "jwt": token.expose_secret()}),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The certificate blocks of a PEM text, whitespace removed.
fn pem_certificates(pem: &str) -> Vec<String> {
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|b| b.split("-----END CERTIFICATE-----").next())
        .map(|b| b.split_whitespace().collect())
        .collect()
}

/// The lab's API server, with the controllers of what Castle installs that the
/// simulator does not run itself (External Secrets' store validation).
#[derive(Debug)]
struct LabCluster(Arc<Lab>);

#[async_trait]
impl ClusterApi for LabCluster {
    async fn apply_as(
        &self,
        manager: &str,
        object: &Value,
        force: bool,
    ) -> castle_kube::Result<Value> {
        self.0
            .metered(async {
                let applied = self.0.cluster.apply_as(manager, object, force).await?;
                if applied.get("kind").and_then(Value::as_str) == Some("ClusterSecretStore") {
                    self.0.reconcile_secret_store(&applied).await;
                }
                Ok(applied)
            })
            .await
    }
    async fn get(&self, object: &castle_kube::ObjectRef) -> castle_kube::Result<Option<Value>> {
        self.0
            .metered(async { self.0.cluster.get(object).await })
            .await
    }
    async fn delete(
        &self,
        object: &castle_kube::ObjectRef,
        propagation: castle_kube::Propagation,
    ) -> castle_kube::Result<()> {
        self.0
            .metered(async { self.0.cluster.delete(object, propagation).await })
            .await
    }
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> castle_kube::Result<Vec<Value>> {
        self.0
            .metered(async { self.0.cluster.list(api_version, kind, namespace).await })
            .await
    }
    async fn wait(
        &self,
        condition: &castle_kube::Condition,
        timeout: std::time::Duration,
    ) -> castle_kube::Result<String> {
        self.0
            .metered(async { self.0.cluster.wait(condition, timeout).await })
            .await
    }
    async fn wait_reporting(
        &self,
        condition: &castle_kube::Condition,
        timeout: std::time::Duration,
        report: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> castle_kube::Result<String> {
        self.0
            .metered(async {
                self.0
                    .cluster
                    .wait_reporting(condition, timeout, report)
                    .await
            })
            .await
    }
    async fn probe_http(
        &self,
        url: &str,
        timeout: std::time::Duration,
    ) -> castle_kube::Result<u16> {
        self.0
            .metered(async { self.0.cluster.probe_http(url, timeout).await })
            .await
    }
}

/// The lab repository's content, as Flux will find it: the reference setup's
/// Kustomization chain, the Traefik ingress the verify step probes, and the
/// releases of the components Castle installed from charts.
fn git_tree(config: &Config) -> Vec<Value> {
    let ks = |name: &str, dep: Option<&str>| {
        let mut spec = json!({"interval": "10m", "path": format!("./infrastructure/{name}"), "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}});
        if let Some(d) = dep {
            spec["dependsOn"] = json!([{"name": d}]);
        }
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": name, "namespace": "flux-system"}, "spec": spec})
    };
    let chain = [
        "bridge",
        "namespaces",
        "operators-tailscale",
        "tailscale-dns",
        "configs",
        "instances",
        "auth",
        "apps",
    ];
    let mut out =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traefik"}})];
    let mut prev = None;
    for name in chain {
        out.push(ks(name, prev));
        prev = Some(name);
    }
    out.extend(postgres_stand_in());
    // Traefik from its chart (the lab's catalogue renders its Deployment and
    // LoadBalancer Service), at the latest version the repository serves.
    out.push(json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "traefik", "namespace": "traefik"}, "spec": {"interval": "10m", "chart": {"spec": {"chart": "traefik", "sourceRef": {"kind": "HelmRepository", "name": "traefik"}}}}}));
    out.push(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository", "metadata": {"name": "traefik", "namespace": "traefik"}, "spec": {"interval": "1h", "url": "https://traefik.github.io/charts"}}));
    // The releases Castle installed, as the repository holds them once Flux owns
    // them: the same objects, so the handover changes nothing.
    for name in ["eso", "metallb", "longhorn"] {
        if let Some(release) = config.release(name) {
            out.extend(crate::steps::release_objects(&release));
        }
    }
    out
}

/// The reference setup's database as the lab's Git tree holds it: PGO's CRD with the
/// operators (`bridge`), and the `tazlab-db` PostgresCluster with the grafana user
/// among the instances; the lab's API server plays PGO and creates each user's
/// Secret, which `[[sync]]` copies into Vault.
fn postgres_stand_in() -> Vec<Value> {
    let at = |path: &str| json!({"castle.mock/path": format!("./infrastructure/{path}")});
    vec![
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "postgresclusters.postgres-operator.crunchydata.com", "annotations": at("bridge")},
            "spec": {"group": "postgres-operator.crunchydata.com", "scope": "Namespaced",
                "names": {"kind": "PostgresCluster", "listKind": "PostgresClusterList", "plural": "postgresclusters", "singular": "postgrescluster"},
                "versions": [{"name": "v1beta1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
        json!({"apiVersion": "postgres-operator.crunchydata.com/v1beta1", "kind": "PostgresCluster",
            "metadata": {"name": "tazlab-db", "namespace": "tazlab-db", "annotations": at("instances")},
            "spec": {"postgresVersion": 17,
                "users": [{"name": "tazlab-admin", "databases": ["tazlab"]}, {"name": "grafana", "databases": ["grafana"]}],
                "instances": [{"name": "instance1", "replicas": 1}]}}),
    ]
}

/// The lab's Talos nodes, coupled to the other simulators, seen through the
/// cluster's talosconfig.
#[derive(Debug)]
struct LabTalos(Arc<Lab>, MockTalos);

#[async_trait]
impl TalosApi for LabTalos {
    async fn apply_configuration(
        &self,
        node: &str,
        config: &SecretString,
        mode: ApplyMode,
        conn: NodeConn,
    ) -> castle_talos::Result<()> {
        self.0
            .metered(async {
                self.0.sync().await;
                self.1.apply_configuration(node, config, mode, conn).await?;
                self.0.api_server_signer(config);
                // The node boots its tailscale extension with the key it was given.
                if let Some(env) = self.0.talos.applied_extension_env(node, "tailscale") {
                    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    if let (Some(key), Some(host)) = (get("TS_AUTHKEY"), get("TS_HOSTNAME")) {
                        let host = host.expose_secret().to_string();
                        if !self
                            .0
                            .tailscale
                            .devices()
                            .iter()
                            .any(|d| d.hostname == host && d.connected == Some(true))
                        {
                            self.0.tailscale.join(&key, &host).map_err(|e| {
                                castle_talos::Error::Config(format!("tailscale extension: {e}"))
                            })?;
                        }
                    }
                }
                Ok(())
            })
            .await
    }
    async fn bootstrap(&self, node: &str) -> castle_talos::Result<bool> {
        self.0
            .metered(async {
                self.0.sync().await;
                let now = self.1.bootstrap(node).await?;
                // A world restored before etcd was bootstrapped had no API server
                // to give the key to: it starts now, with the key Vault keeps.
                self.0.restore_signer();
                self.0.cluster.set_reachable(true);
                for n in &self.0.config.nodes {
                    self.0.join(n);
                }
                Ok(now)
            })
            .await
    }
    async fn kubeconfig(&self, node: &str) -> castle_talos::Result<SecretString> {
        self.0
            .metered(async {
                self.0.sync().await;
                self.1.kubeconfig(node).await
            })
            .await
    }
    async fn services(&self, node: &str) -> castle_talos::Result<Vec<ServiceHealth>> {
        self.0
            .metered(async {
                self.0.sync().await;
                let services = self.1.services(node).await?;
                if let Some(n) = self.0.config.nodes.iter().find(|n| n.address() == node) {
                    self.0.join(n);
                }
                Ok(services)
            })
            .await
    }
    async fn version(&self, node: &str, conn: NodeConn) -> castle_talos::Result<String> {
        self.0
            .metered(async {
                self.0.sync().await;
                self.1.version(node, conn).await
            })
            .await
    }
    async fn connection(&self, node: &str) -> castle_talos::Result<NodeConn> {
        self.0
            .metered(async {
                self.0.sync().await;
                self.1.connection(node).await
            })
            .await
    }
    async fn reset(&self, node: &str, graceful: bool) -> castle_talos::Result<()> {
        self.0
            .metered(async { self.1.reset(node, graceful).await })
            .await
    }
}

/// The lab's Proxmox VE. A real Proxmox keeps what it was told even when Castle
/// dies right after; so the lab's world is saved after every call that changes it
/// (a clone sent a moment before a crash is then still there, nameless, on resume).
#[derive(Debug)]
struct LabProxmox(Arc<Lab>, MockProxmox);

impl LabProxmox {
    fn kept<T>(&self, result: castle_proxmox::Result<T>) -> castle_proxmox::Result<T> {
        let value = result?;
        self.0
            .write_state()
            .map_err(|e| castle_proxmox::Error::Setup(format!("lab world: {e}")))?;
        Ok(value)
    }
}

#[async_trait]
impl ProxmoxApi for LabProxmox {
    async fn list_vms(&self) -> castle_proxmox::Result<Vec<castle_proxmox::VmInfo>> {
        self.0.metered(async { self.1.list_vms().await }).await
    }
    async fn vm_status(
        &self,
        node: &str,
        vmid: u32,
    ) -> castle_proxmox::Result<Option<castle_proxmox::VmInfo>> {
        self.0
            .metered(async { self.1.vm_status(node, vmid).await })
            .await
    }
    async fn vm_config(
        &self,
        node: &str,
        vmid: u32,
    ) -> castle_proxmox::Result<std::collections::BTreeMap<String, String>> {
        self.0
            .metered(async { self.1.vm_config(node, vmid).await })
            .await
    }
    async fn clone_vm(
        &self,
        node: &str,
        template: u32,
        request: &castle_proxmox::CloneRequest,
    ) -> castle_proxmox::Result<castle_proxmox::Upid> {
        self.0
            .metered(async { self.kept(self.1.clone_vm(node, template, request).await) })
            .await
    }
    async fn configure(
        &self,
        node: &str,
        vmid: u32,
        config: &castle_proxmox::VmConfig,
    ) -> castle_proxmox::Result<()> {
        self.0
            .metered(async { self.kept(self.1.configure(node, vmid, config).await) })
            .await
    }
    async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u32,
    ) -> castle_proxmox::Result<Option<castle_proxmox::Upid>> {
        self.0
            .metered(async { self.kept(self.1.resize_disk(node, vmid, disk, gib).await) })
            .await
    }
    async fn start(&self, node: &str, vmid: u32) -> castle_proxmox::Result<castle_proxmox::Upid> {
        self.0
            .metered(async { self.kept(self.1.start(node, vmid).await) })
            .await
    }
    async fn shutdown(
        &self,
        node: &str,
        vmid: u32,
        timeout: std::time::Duration,
    ) -> castle_proxmox::Result<castle_proxmox::Upid> {
        self.0
            .metered(async { self.kept(self.1.shutdown(node, vmid, timeout).await) })
            .await
    }
    async fn stop(&self, node: &str, vmid: u32) -> castle_proxmox::Result<castle_proxmox::Upid> {
        self.0
            .metered(async { self.kept(self.1.stop(node, vmid).await) })
            .await
    }
    async fn delete_vm(
        &self,
        node: &str,
        vmid: u32,
    ) -> castle_proxmox::Result<castle_proxmox::Upid> {
        self.0
            .metered(async { self.kept(self.1.delete_vm(node, vmid).await) })
            .await
    }
    async fn next_id(&self) -> castle_proxmox::Result<u32> {
        self.0.metered(async { self.1.next_id().await }).await
    }
    async fn vmid_free(&self, vmid: u32) -> castle_proxmox::Result<bool> {
        self.0.metered(async { self.1.vmid_free(vmid).await }).await
    }
    async fn task_status(
        &self,
        upid: &castle_proxmox::Upid,
    ) -> castle_proxmox::Result<castle_proxmox::TaskStatus> {
        self.0
            .metered(async { self.1.task_status(upid).await })
            .await
    }
    async fn task_log(
        &self,
        upid: &castle_proxmox::Upid,
        lines: usize,
    ) -> castle_proxmox::Result<Vec<String>> {
        self.0
            .metered(async { self.1.task_log(upid, lines).await })
            .await
    }
    async fn version(&self) -> castle_proxmox::Result<castle_proxmox::PveVersion> {
        self.0.metered(async { self.1.version().await }).await
    }
    async fn permissions(
        &self,
        path: &str,
    ) -> castle_proxmox::Result<std::collections::BTreeMap<String, bool>> {
        self.0
            .metered(async { self.1.permissions(path).await })
            .await
    }
    async fn nodes(&self) -> castle_proxmox::Result<Vec<castle_proxmox::NodeInfo>> {
        self.0.metered(async { self.1.nodes().await }).await
    }
    async fn storage_status(
        &self,
        node: &str,
        storage: &str,
    ) -> castle_proxmox::Result<castle_proxmox::StorageStatus> {
        self.0
            .metered(async { self.1.storage_status(node, storage).await })
            .await
    }
}

/// The lab's Vault, seen with the token the config names.
#[derive(Debug)]
struct LabVault(Arc<Lab>, MockVault);

#[async_trait]
impl VaultApi for LabVault {
    async fn read(&self, path: &str) -> castle_vault::Result<Option<Value>> {
        self.0.metered(self.1.read(path)).await
    }
    async fn write(&self, path: &str, body: Value) -> castle_vault::Result<Option<Value>> {
        self.0.metered(self.1.write(path, body)).await
    }
    async fn delete(&self, path: &str) -> castle_vault::Result<()> {
        self.0.metered(self.1.delete(path)).await
    }
    async fn list(&self, path: &str) -> castle_vault::Result<Vec<String>> {
        self.0.metered(self.1.list(path)).await
    }
    async fn seal_status(&self) -> castle_vault::Result<castle_vault::SealStatus> {
        self.0.metered(self.1.seal_status()).await
    }
}

/// The lab's tailnet API, seen through the OAuth client the config names.
#[derive(Debug)]
struct LabTailscale(Arc<Lab>, MockTailscale);

#[async_trait]
impl TailscaleApi for LabTailscale {
    async fn create_key(
        &self,
        request: &castle_tailscale::KeyRequest,
    ) -> castle_tailscale::Result<castle_tailscale::AuthKey> {
        self.0
            .metered(async { self.1.create_key(request).await })
            .await
    }
    async fn list_devices(&self) -> castle_tailscale::Result<Vec<castle_tailscale::Device>> {
        self.0
            .metered(async {
                self.0.sync().await;
                self.1.list_devices().await
            })
            .await
    }
    async fn delete_device(&self, node_id: &str) -> castle_tailscale::Result<()> {
        self.0
            .metered(async { self.1.delete_device(node_id).await })
            .await
    }
    async fn list_keys(&self) -> castle_tailscale::Result<Vec<castle_tailscale::KeyInfo>> {
        self.0.metered(async { self.1.list_keys().await }).await
    }
    async fn revoke_key(&self, id: &str) -> castle_tailscale::Result<()> {
        self.0.metered(async { self.1.revoke_key(id).await }).await
    }
    async fn grant(&self, scopes: &[String]) -> castle_tailscale::Result<castle_tailscale::Grant> {
        self.0.metered(async { self.1.grant(scopes).await }).await
    }
    async fn tag_owners(
        &self,
    ) -> castle_tailscale::Result<std::collections::BTreeMap<String, Vec<String>>> {
        self.0.metered(async { self.1.tag_owners().await }).await
    }
    async fn oauth_client(&self) -> castle_tailscale::Result<castle_tailscale::OauthClientInfo> {
        self.0.metered(async { self.1.oauth_client().await }).await
    }
}

/// An operator's policy that forgot `sudo` on the lease paths (`[lab] inject =
/// ["vault-missing-capability"]`).
const LAB_NARROW_POLICY: &str = r#"
path "*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/auth/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }
"#;

/// Everything, sudo included (`[lab] inject = ["vault-short-token"]`).
const LAB_ADMIN_POLICY: &str = r#"
path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }
"#;

/// The lab's golden template.
const LAB_TEMPLATE: &str = "talos-v1.12-golden";

/// The scopes of the lab's OAuth client: what Castle needs, and the reads of the
/// policy and of the client's own record that let `castle doctor` check the tags.
const LAB_OAUTH_SCOPES: [&str; 4] = [
    "auth_keys",
    "devices:core",
    "policy_file:read",
    "oauth_keys:read",
];

/// What the lab's golden template was built with.
const LAB_SCHEMATIC_EXTENSIONS: [&str; 3] = [
    "siderolabs/tailscale",
    "siderolabs/iscsi-tools",
    "siderolabs/util-linux-tools",
];

/// The lab's git server: it holds the one repository the Flux settings name and
/// knows the token the lab's secrets hold for it.
#[derive(Debug)]
struct LabGit {
    url: String,
    branch: String,
    token: Option<SecretString>,
    refuses: bool,
}

#[async_trait]
impl crate::git::GitRemote for LabGit {
    async fn refs(
        &self,
        url: &str,
        token: Option<&SecretString>,
    ) -> Result<Vec<String>, crate::git::GitError> {
        let same_token = match (token, &self.token) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        if self.refuses || !same_token {
            return Err(crate::git::GitError::Refused {
                url: url.into(),
                status: 401,
            });
        }
        if url != self.url {
            // GitHub answers 404 for a repository it does not show this token.
            return Err(crate::git::GitError::Refused {
                url: url.into(),
                status: 404,
            });
        }
        Ok(vec!["HEAD".into(), format!("refs/heads/{}", self.branch)])
    }
}

/// The lab as the steps' backends.
#[derive(Debug, Clone)]
pub struct LabBackends(pub Arc<Lab>);

impl Backends for LabBackends {
    fn proxmox(
        &self,
        p: &Proxmox,
        token: &SecretString,
        _ca: Option<PathBuf>,
    ) -> Result<Arc<dyn ProxmoxApi>, StepError> {
        let client = self.0.proxmox.with_presented_token(&p.token_id, token);
        Ok(Arc::new(LabProxmox(Arc::clone(&self.0), client)))
    }
    fn talos(&self, talosconfig: &SecretString) -> Result<Arc<dyn TalosApi>, StepError> {
        let client = self
            .0
            .talos
            .with_talosconfig(talosconfig)
            .map_err(|e| StepError::permanent(format!("the lab's talosconfig: {e}")))?;
        Ok(Arc::new(LabTalos(Arc::clone(&self.0), client)))
    }
    fn vault(
        &self,
        _address: &str,
        _ca: Option<PathBuf>,
        token: &SecretString,
    ) -> Result<Arc<dyn VaultApi>, StepError> {
        // The token the config names is presented; the lab's Vault knows only the
        // one in the lab's secrets, as a real server knows only its own.
        Ok(Arc::new(LabVault(
            Arc::clone(&self.0),
            self.0.vault.with_presented_token(token),
        )))
    }
    fn tailscale(
        &self,
        _tailnet: &str,
        id: &SecretString,
        secret: &SecretString,
    ) -> Result<Arc<dyn TailscaleApi>, StepError> {
        Ok(Arc::new(LabTailscale(
            Arc::clone(&self.0),
            self.0.tailscale.session(id, secret),
        )))
    }
    fn cluster(&self, _kubeconfig: &SecretString) -> Result<Arc<dyn ClusterApi>, StepError> {
        Ok(Arc::new(LabCluster(Arc::clone(&self.0))))
    }
    fn image_extensions(&self, image: &str) -> Option<Vec<String>> {
        // The lab's image factory built the schematic of the lab's own installer.
        (image == self.0.config.cluster.installer_image).then(|| {
            LAB_SCHEMATIC_EXTENSIONS
                .iter()
                .map(|e| (*e).to_string())
                .collect()
        })
    }
    fn git(&self) -> Result<Arc<dyn crate::git::GitRemote>, StepError> {
        let lab = &self.0;
        let flux = lab.config.components.flux.as_ref();
        let wanted = flux
            .and_then(|f| f.branch.clone())
            .unwrap_or_else(|| "main".into());
        let token = flux
            .and_then(|f| f.token.as_ref())
            .map(|t| lab.config.secrets().resolve(t))
            .transpose()
            .map_err(|e| StepError::permanent(e.to_string()))?;
        Ok(Arc::new(LabGit {
            url: flux.and_then(|f| f.git_url.clone()).unwrap_or_default(),
            branch: if lab.injected(LabFault::GitMissingBranch) {
                format!("{wanted}-old")
            } else {
                wanted
            },
            token,
            refuses: lab.injected(LabFault::GitTokenRefused),
        }))
    }
}
