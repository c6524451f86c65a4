//! The standard rebirth steps, each thin over its service crate.

mod charts;
mod cluster;
pub(crate) mod doctor;
mod downloads;
pub(crate) mod plan;
mod platform;
mod secrets;
mod sync;
mod tailnet;
mod talos;
mod vault;
pub(crate) mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use castle_kube::ClusterApi;
use secrecy::SecretString;
use sha2::{Digest as _, Sha256};

use crate::backends::Backends;
use crate::config::Config;
use crate::engine::{Step, StepCtx};
use crate::error::{Classify, StepError};
use crate::secrets::SecretRef;

pub(crate) use charts::release_objects;
pub(crate) use cluster::{Engine, Eso, FluxInstall, Gitops, Networking, Storage, Verify};
pub(crate) use downloads::Downloads;
pub(crate) use platform::{NodeVm, Platform, journal_clones};
pub(crate) use secrets::ResolveSecrets;
pub(crate) use tailnet::TailnetKey;
pub(crate) use talos::{
    Bootstrap, Join, NodeConfig, TalosStep, bundle_location, machine_input, patch_text,
};
pub(crate) use vault::{GENERATED_PLACEHOLDER, VaultDb, VaultJwt};

/// What steps hand each other in memory: never written anywhere.
#[derive(Default)]
pub(crate) struct Shared {
    secrets: Mutex<BTreeMap<SecretRef, SecretString>>,
    pub(crate) tailnet_key: Mutex<Option<SecretString>>,
    pub(crate) service_account_key: Mutex<Option<SecretString>>,
    pub(crate) kubeconfig: Mutex<Option<SecretString>>,
    /// How the platform step decided to clone, and the clone slots per storage the
    /// node units share.
    pub(crate) clone_mode: Mutex<Option<castle_proxmox::ops::CloneMode>>,
    pub(crate) clones: Mutex<Option<castle_proxmox::ops::CloneLimiter>>,
    /// The cluster's Talos bundle and client, for the node units.
    pub(crate) talos: Mutex<Option<talos::TalosSession>>,
}

/// Everything a step needs.
pub(crate) struct Ctx {
    pub(crate) config: Arc<Config>,
    pub(crate) backends: Arc<dyn Backends>,
    pub(crate) shared: Shared,
    /// `destroy --wipe`: also delete the material kept for rebirths.
    pub(crate) wipe: bool,
}

impl Ctx {
    /// Resolves a secret ref (cached for the run).
    pub(crate) fn secret(&self, r: &SecretRef) -> Result<SecretString, StepError> {
        let mut cache = self
            .shared
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = cache.get(r) {
            return Ok(v.clone());
        }
        let v = self
            .config
            .secrets()
            .resolve(r)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        cache.insert(r.clone(), v.clone());
        Ok(v)
    }

    /// Reads the generated passwords that `refs` name (`{ vault = ... }`) from Vault
    /// KV, where the `vault-db` step generated them, into the run's memory, so that
    /// [`Ctx::secret`] resolves them. Other refs are left alone.
    pub(crate) async fn read_generated<'a>(
        &self,
        refs: impl IntoIterator<Item = &'a SecretRef>,
    ) -> Result<(), StepError> {
        let mut names: Vec<&str> = refs.into_iter().filter_map(SecretRef::generated).collect();
        names.sort_unstable();
        names.dedup();
        names.retain(|n| {
            !self
                .shared
                .secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&SecretRef::vault(n))
        });
        if names.is_empty() {
            return Ok(());
        }
        let v = self
            .config
            .vault
            .as_ref()
            .ok_or_else(|| StepError::permanent("no [vault] section"))?;
        let api = vault::api(self)?;
        for name in names {
            let value = castle_vault::generated_value(api.as_ref(), &v.spec, name, "password")
                .await
                .map_err(fail(format!("reading the generated password `{name}`")))?
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "the generated password `{name}` is not in Vault: the vault-db step generates it"
                    ))
                    .on(name.to_string())
                })?;
            self.shared
                .secrets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(SecretRef::vault(name), value);
        }
        Ok(())
    }

    pub(crate) fn take<T: Clone>(slot: &Mutex<Option<T>>) -> Option<T> {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn put<T>(slot: &Mutex<Option<T>>, v: T) {
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
    }

    /// The kubeconfig for a destroy step: the one in memory, else the file the talos
    /// step wrote into `configs_dir`.
    pub(crate) fn kubeconfig_for_destroy(&self) -> Option<SecretString> {
        if let Some(k) = Self::take(&self.shared.kubeconfig) {
            return Some(k);
        }
        let dir = self.config.cluster.configs_dir.as_ref()?;
        std::fs::read_to_string(self.config.path(dir).join("kubeconfig"))
            .ok()
            .map(SecretString::from)
    }

    /// The cluster's API, from the kubeconfig the talos step fetched.
    pub(crate) fn cluster(&self) -> Result<Arc<dyn ClusterApi>, StepError> {
        let kubeconfig = Self::take(&self.shared.kubeconfig).ok_or_else(|| {
            StepError::permanent(
                "no kubeconfig in memory: the talos step must run in the same process",
            )
        })?;
        self.backends.cluster(&kubeconfig)
    }
}

/// A digest of non-secret inputs.
pub(crate) fn fingerprint(parts: &[&dyn erased::Fingerprint]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

pub(crate) mod erased {
    /// Something that hashes into a fingerprint.
    pub(crate) trait Fingerprint {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Fingerprint for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// Maps a service error to a step error, naming what the step was doing.
pub(crate) fn fail<E: Classify>(doing: impl std::fmt::Display) -> impl FnOnce(E) -> StepError {
    move |e| StepError::from_service(&e).context(doing)
}

/// Repeats `attempt` while it fails transiently: backoff from 250 ms to 2 s, up to
/// `budget`, stopping at once on cancellation. For conditions that only polling
/// can observe (a Talos node finishing its install).
pub(crate) async fn until_ok<T, F, Fut>(
    ctx: &StepCtx,
    what: &str,
    budget: Duration,
    mut attempt: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StepError>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut delay = Duration::from_millis(250);
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                ctx.guard(async {
                    tokio::time::sleep(delay).await;
                    Ok(())
                })
                .await?;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) if e.is_transient() => {
                return Err(StepError::timeout(format!(
                    "{what}: still failing after {}s: {}",
                    budget.as_secs(),
                    e.message
                )));
            }
            other => return other,
        }
    }
}

/// The rebirth graph for a config; disabled parts drop out.
pub(crate) fn graph(ctx: &Arc<Ctx>) -> Vec<Arc<dyn Step>> {
    let c = &ctx.config;
    let mut steps: Vec<Arc<dyn Step>> = vec![Arc::new(ResolveSecrets(Arc::clone(ctx)))];
    if c.tailscale.is_some() {
        steps.push(Arc::new(TailnetKey(Arc::clone(ctx))));
    }
    if c.vault.is_some() {
        steps.push(Arc::new(VaultJwt(Arc::clone(ctx))));
        steps.push(Arc::new(VaultDb(Arc::clone(ctx))));
    }
    // Pinned downloads first, so that one that fails stops the rebirth before a VM
    // exists (the platform step waits for it).
    if !c.downloads().is_empty() {
        steps.push(Arc::new(Downloads(Arc::clone(ctx))));
    }
    // Each node flows on its own: its VM, its config applied the moment its Talos
    // API answers, its join once etcd runs; control planes first, so the first
    // one's clone is never behind a worker's in the clone slots.
    let mut nodes: Vec<&crate::config::Node> = c.nodes.iter().collect();
    nodes.sort_by_key(|n| n.role != crate::config::Role::Controlplane);
    steps.push(Arc::new(Platform(Arc::clone(ctx))));
    for n in &nodes {
        steps.push(Arc::new(NodeVm::new(ctx, n)));
    }
    steps.push(Arc::new(TalosStep(Arc::clone(ctx))));
    for n in &nodes {
        steps.push(Arc::new(NodeConfig::new(ctx, n)));
    }
    steps.push(Arc::new(Bootstrap(Arc::clone(ctx))));
    for n in &nodes {
        steps.push(Arc::new(Join::new(ctx, n)));
    }
    steps.push(Arc::new(Engine(Arc::clone(ctx))));
    // Flux's controllers right after the cluster basics; the components it
    // installs (charts) in parallel after them; the Git handover last.
    if c.component("flux").is_some() {
        steps.push(Arc::new(FluxInstall(Arc::clone(ctx))));
    }
    if c.component("eso").is_some() {
        steps.push(Arc::new(Eso(Arc::clone(ctx))));
    }
    if c.component("metallb").is_some() {
        steps.push(Arc::new(Networking(Arc::clone(ctx))));
    }
    if c.component("longhorn").is_some() {
        steps.push(Arc::new(Storage(Arc::clone(ctx))));
    }
    if c.component("flux").is_some() {
        steps.push(Arc::new(Gitops(Arc::clone(ctx))));
    }
    if !c.sync.is_empty() && c.vault.is_some() {
        steps.push(Arc::new(sync::SyncSecrets(Arc::clone(ctx))));
    }
    if c.verify.is_some() {
        steps.push(Arc::new(Verify(Arc::clone(ctx))));
    }
    steps
}
