//! Retries where the fault is: every service client Castle builds is wrapped so that
//! one call that fails transiently is tried again at once, with backoff and jitter,
//! instead of failing the whole step (which would redo every call before it).
//!
//! - Idempotent calls (reads, config PUTs, server-side apply, deletes of what may
//!   already be gone) are retried whenever the error is transient.
//! - Calls that create something (clone a VM, mint a key, bootstrap etcd, reset a
//!   node) are retried only when the error says the request never took effect
//!   (`is_safe_to_retry`); otherwise the step decides, after checking what happened.
//! - A server's `Retry-After` is honoured (capped). The step retry stays the outer
//!   layer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use castle_kube::{ClusterApi, Condition, ObjectRef, Propagation};
use castle_proxmox::{CloneRequest, ProxmoxApi, TaskStatus, Upid, VmConfig, VmInfo};
use castle_tailscale::{AuthKey, Device, KeyInfo, KeyRequest, TailscaleApi};
use castle_talos::{ApplyMode, NodeConn, ServiceHealth, TalosApi};
use castle_vault::VaultApi;
use rand::Rng as _;
use secrecy::SecretString;
use serde_json::Value;

use crate::backends::Backends;
use crate::config::Proxmox;
use crate::error::{Classify, StepError};

/// How one call is retried: plain values (STYLE: `RetryConfig::standard()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallRetry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles each time, with full jitter.
    pub base: Duration,
    /// The longest backoff, and the most of a server's `Retry-After` honoured.
    pub max: Duration,
    /// Real seconds per modelled second (the lab's `time_scale`; 1 for real systems).
    pub scale: f64,
}

impl CallRetry {
    /// Four tries, 200 ms doubling to at most 5 s.
    pub fn standard() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
            scale: 1.0,
        }
    }

    /// The same policy on a modelled clock.
    #[must_use]
    pub fn with_scale(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }

    /// No retries (each call once).
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::standard()
        }
    }

    fn backoff(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let wait = match asked {
            Some(a) => a.min(self.max),
            None => ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)),
        };
        wait.mul_f64(self.scale.clamp(0.0, 1.0e6))
    }

    /// Runs `call` until it succeeds, fails for good, or the tries run out.
    /// `idempotent`: whether repeating the call can do no harm whatever happened.
    async fn run<T, E, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T, E>
    where
        E: Classify,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    attempt += 1;
                    let again = e.is_transient() && (idempotent || e.is_safe_to_retry());
                    if !again || attempt >= self.attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(self.backoff(attempt - 1, e.retry_after())).await;
                }
            }
        }
    }
}

/// [`Backends`] whose every client retries its calls by a [`CallRetry`].
pub struct Retrying {
    inner: Arc<dyn Backends>,
    policy: CallRetry,
}

impl std::fmt::Debug for Retrying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrying")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Retrying {
    /// Wraps `inner`'s clients.
    pub fn new(inner: Arc<dyn Backends>, policy: CallRetry) -> Self {
        Self { inner, policy }
    }
}

impl Backends for Retrying {
    fn proxmox(
        &self,
        settings: &Proxmox,
        token: &SecretString,
        ca_file: Option<std::path::PathBuf>,
    ) -> Result<Arc<dyn ProxmoxApi>, StepError> {
        let inner = self.inner.proxmox(settings, token, ca_file)?;
        Ok(Arc::new(RetryingProxmox(inner, self.policy)))
    }
    fn talos(&self, talosconfig: &SecretString) -> Result<Arc<dyn TalosApi>, StepError> {
        let inner = self.inner.talos(talosconfig)?;
        Ok(Arc::new(RetryingTalos(inner, self.policy)))
    }
    fn vault(
        &self,
        address: &str,
        ca_file: Option<std::path::PathBuf>,
        token: &SecretString,
    ) -> Result<Arc<dyn VaultApi>, StepError> {
        let inner = self.inner.vault(address, ca_file, token)?;
        Ok(Arc::new(RetryingVault(inner, self.policy)))
    }
    fn tailscale(
        &self,
        tailnet: &str,
        client_id: &SecretString,
        client_secret: &SecretString,
    ) -> Result<Arc<dyn TailscaleApi>, StepError> {
        let inner = self.inner.tailscale(tailnet, client_id, client_secret)?;
        Ok(Arc::new(RetryingTailscale(inner, self.policy)))
    }
    fn cluster(&self, kubeconfig: &SecretString) -> Result<Arc<dyn ClusterApi>, StepError> {
        let inner = self.inner.cluster(kubeconfig)?;
        Ok(Arc::new(RetryingCluster(inner, self.policy)))
    }
    fn image_extensions(&self, image: &str) -> Option<Vec<String>> {
        self.inner.image_extensions(image)
    }
    fn git(&self) -> Result<Arc<dyn crate::git::GitRemote>, StepError> {
        // One read, asked by `castle doctor` only: its answer is the finding.
        self.inner.git()
    }
}

#[derive(Debug)]
struct RetryingProxmox(Arc<dyn ProxmoxApi>, CallRetry);

#[async_trait]
impl ProxmoxApi for RetryingProxmox {
    async fn list_vms(&self) -> castle_proxmox::Result<Vec<VmInfo>> {
        self.1.run(true, || self.0.list_vms()).await
    }
    async fn vm_status(&self, node: &str, vmid: u32) -> castle_proxmox::Result<Option<VmInfo>> {
        self.1.run(true, || self.0.vm_status(node, vmid)).await
    }
    async fn vm_config(
        &self,
        node: &str,
        vmid: u32,
    ) -> castle_proxmox::Result<BTreeMap<String, String>> {
        self.1.run(true, || self.0.vm_config(node, vmid)).await
    }
    async fn clone_vm(
        &self,
        node: &str,
        template: u32,
        request: &CloneRequest,
    ) -> castle_proxmox::Result<Upid> {
        // A clone that may have been sent is checked by `ensure_vm` on the next try.
        self.1
            .run(false, || self.0.clone_vm(node, template, request))
            .await
    }
    async fn configure(
        &self,
        node: &str,
        vmid: u32,
        config: &VmConfig,
    ) -> castle_proxmox::Result<()> {
        self.1
            .run(true, || self.0.configure(node, vmid, config))
            .await
    }
    async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u32,
    ) -> castle_proxmox::Result<Option<Upid>> {
        // An absolute size: the same resize twice is one resize.
        self.1
            .run(true, || self.0.resize_disk(node, vmid, disk, gib))
            .await
    }
    async fn start(&self, node: &str, vmid: u32) -> castle_proxmox::Result<Upid> {
        self.1.run(false, || self.0.start(node, vmid)).await
    }
    async fn shutdown(
        &self,
        node: &str,
        vmid: u32,
        timeout: Duration,
    ) -> castle_proxmox::Result<Upid> {
        self.1
            .run(false, || self.0.shutdown(node, vmid, timeout))
            .await
    }
    async fn stop(&self, node: &str, vmid: u32) -> castle_proxmox::Result<Upid> {
        self.1.run(false, || self.0.stop(node, vmid)).await
    }
    async fn delete_vm(&self, node: &str, vmid: u32) -> castle_proxmox::Result<Upid> {
        self.1.run(false, || self.0.delete_vm(node, vmid)).await
    }
    async fn next_id(&self) -> castle_proxmox::Result<u32> {
        self.1.run(true, || self.0.next_id()).await
    }
    async fn vmid_free(&self, vmid: u32) -> castle_proxmox::Result<bool> {
        self.1.run(true, || self.0.vmid_free(vmid)).await
    }
    async fn task_status(&self, upid: &Upid) -> castle_proxmox::Result<TaskStatus> {
        self.1.run(true, || self.0.task_status(upid)).await
    }
    async fn task_log(&self, upid: &Upid, lines: usize) -> castle_proxmox::Result<Vec<String>> {
        self.1.run(true, || self.0.task_log(upid, lines)).await
    }
    async fn version(&self) -> castle_proxmox::Result<castle_proxmox::PveVersion> {
        self.1.run(true, || self.0.version()).await
    }
    async fn permissions(&self, path: &str) -> castle_proxmox::Result<BTreeMap<String, bool>> {
        self.1.run(true, || self.0.permissions(path)).await
    }
    async fn nodes(&self) -> castle_proxmox::Result<Vec<castle_proxmox::NodeInfo>> {
        self.1.run(true, || self.0.nodes()).await
    }
    async fn storage_status(
        &self,
        node: &str,
        storage: &str,
    ) -> castle_proxmox::Result<castle_proxmox::StorageStatus> {
        self.1
            .run(true, || self.0.storage_status(node, storage))
            .await
    }
}

#[derive(Debug)]
struct RetryingTalos(Arc<dyn TalosApi>, CallRetry);

#[async_trait]
impl TalosApi for RetryingTalos {
    async fn apply_configuration(
        &self,
        node: &str,
        config: &SecretString,
        mode: ApplyMode,
        conn: NodeConn,
    ) -> castle_talos::Result<()> {
        // The same config again changes nothing on the node.
        self.1
            .run(true, || {
                self.0.apply_configuration(node, config, mode, conn)
            })
            .await
    }
    async fn bootstrap(&self, node: &str) -> castle_talos::Result<bool> {
        // A bootstrap that happened answers AlreadyExists (done) the second time.
        self.1.run(true, || self.0.bootstrap(node)).await
    }
    async fn kubeconfig(&self, node: &str) -> castle_talos::Result<SecretString> {
        self.1.run(true, || self.0.kubeconfig(node)).await
    }
    async fn services(&self, node: &str) -> castle_talos::Result<Vec<ServiceHealth>> {
        self.1.run(true, || self.0.services(node)).await
    }
    async fn version(&self, node: &str, conn: NodeConn) -> castle_talos::Result<String> {
        self.1.run(true, || self.0.version(node, conn)).await
    }
    async fn connection(&self, node: &str) -> castle_talos::Result<NodeConn> {
        self.1.run(true, || self.0.connection(node)).await
    }
    async fn reset(&self, node: &str, graceful: bool) -> castle_talos::Result<()> {
        self.1.run(false, || self.0.reset(node, graceful)).await
    }
}

#[derive(Debug)]
struct RetryingVault(Arc<dyn VaultApi>, CallRetry);

#[async_trait]
impl VaultApi for RetryingVault {
    async fn read(&self, path: &str) -> castle_vault::Result<Option<Value>> {
        self.1.run(true, || self.0.read(path)).await
    }
    async fn write(&self, path: &str, body: Value) -> castle_vault::Result<Option<Value>> {
        // Vault writes are declarative (the same body twice leaves the same state),
        // and a check-and-set write that did land fails the second time as a
        // mismatch, which the caller reads as "already written".
        self.1.run(true, || self.0.write(path, body.clone())).await
    }
    async fn delete(&self, path: &str) -> castle_vault::Result<()> {
        self.1.run(true, || self.0.delete(path)).await
    }
    async fn list(&self, path: &str) -> castle_vault::Result<Vec<String>> {
        self.1.run(true, || self.0.list(path)).await
    }
    async fn seal_status(&self) -> castle_vault::Result<castle_vault::SealStatus> {
        self.1.run(true, || self.0.seal_status()).await
    }
}

#[derive(Debug)]
struct RetryingTailscale(Arc<dyn TailscaleApi>, CallRetry);

#[async_trait]
impl TailscaleApi for RetryingTailscale {
    async fn create_key(&self, request: &KeyRequest) -> castle_tailscale::Result<AuthKey> {
        // A mint whose answer was lost is cleaned up by `mint_rebirth_key`.
        self.1.run(false, || self.0.create_key(request)).await
    }
    async fn list_devices(&self) -> castle_tailscale::Result<Vec<Device>> {
        self.1.run(true, || self.0.list_devices()).await
    }
    async fn delete_device(&self, node_id: &str) -> castle_tailscale::Result<()> {
        self.1.run(true, || self.0.delete_device(node_id)).await
    }
    async fn list_keys(&self) -> castle_tailscale::Result<Vec<KeyInfo>> {
        self.1.run(true, || self.0.list_keys()).await
    }
    async fn revoke_key(&self, id: &str) -> castle_tailscale::Result<()> {
        self.1.run(true, || self.0.revoke_key(id)).await
    }
    async fn grant(&self, scopes: &[String]) -> castle_tailscale::Result<castle_tailscale::Grant> {
        self.1.run(true, || self.0.grant(scopes)).await
    }
    async fn tag_owners(
        &self,
    ) -> castle_tailscale::Result<std::collections::BTreeMap<String, Vec<String>>> {
        self.1.run(true, || self.0.tag_owners()).await
    }
    async fn oauth_client(&self) -> castle_tailscale::Result<castle_tailscale::OauthClientInfo> {
        self.1.run(true, || self.0.oauth_client()).await
    }
}

#[derive(Debug)]
struct RetryingCluster(Arc<dyn ClusterApi>, CallRetry);

#[async_trait]
impl ClusterApi for RetryingCluster {
    async fn apply_as(
        &self,
        manager: &str,
        object: &Value,
        force: bool,
    ) -> castle_kube::Result<Value> {
        self.1
            .run(true, || self.0.apply_as(manager, object, force))
            .await
    }
    async fn get(&self, object: &ObjectRef) -> castle_kube::Result<Option<Value>> {
        self.1.run(true, || self.0.get(object)).await
    }
    async fn delete(
        &self,
        object: &ObjectRef,
        propagation: Propagation,
    ) -> castle_kube::Result<()> {
        self.1
            .run(true, || self.0.delete(object, propagation))
            .await
    }
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> castle_kube::Result<Vec<Value>> {
        self.1
            .run(true, || self.0.list(api_version, kind, namespace))
            .await
    }
    async fn wait(&self, condition: &Condition, timeout: Duration) -> castle_kube::Result<String> {
        self.wait_reporting(condition, timeout, &|_| {}).await
    }
    async fn wait_reporting(
        &self,
        condition: &Condition,
        timeout: Duration,
        report: &(dyn for<'s> Fn(&'s str) + Send + Sync),
    ) -> castle_kube::Result<String> {
        // A watch that fails transiently is started again, within the same deadline,
        // as a watcher resumes a dropped watch; anything else ends the wait.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.0.wait_reporting(condition, left, report).await {
                Err(e) if e.is_transient() && !left.is_zero() => {
                    tokio::time::sleep(self.1.backoff(attempt, e.retry_after()).min(left)).await;
                    attempt = (attempt + 1).min(8);
                }
                other => return other,
            }
        }
    }
    async fn probe_http(&self, url: &str, timeout: Duration) -> castle_kube::Result<u16> {
        self.1.run(true, || self.0.probe_http(url, timeout)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Flaky {
        transient: bool,
        safe: bool,
    }
    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("flaky")
        }
    }
    impl Classify for Flaky {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn is_safe_to_retry(&self) -> bool {
            self.safe
        }
        fn retry_after(&self) -> Option<Duration> {
            None
        }
    }

    async fn count(
        policy: CallRetry,
        idempotent: bool,
        fails: u32,
        e: (bool, bool),
    ) -> (u32, bool) {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let r = policy
            .run(idempotent, || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < fails {
                        Err(Flaky {
                            transient: e.0,
                            safe: e.1,
                        })
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        (calls.into_inner(), r.is_ok())
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_retry_transient_errors_and_nothing_else() {
        let p = CallRetry::standard();
        assert_eq!(count(p, true, 2, (true, false)).await, (3, true));
        assert_eq!(
            count(p, true, 9, (true, false)).await,
            (4, false),
            "bounded"
        );
        assert_eq!(
            count(p, true, 1, (false, false)).await,
            (1, false),
            "permanent: once"
        );
        assert_eq!(
            count(CallRetry::none(), true, 1, (true, true)).await,
            (1, false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_create_retry_only_what_never_took_effect() {
        let p = CallRetry::standard();
        assert_eq!(
            count(p, false, 1, (true, false)).await,
            (1, false),
            "maybe sent: the step checks"
        );
        assert_eq!(
            count(p, false, 2, (true, true)).await,
            (3, true),
            "never sent: safe"
        );
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        let p = CallRetry::standard();
        for attempt in 0..10 {
            let b = p.backoff(attempt, None);
            assert!(b <= p.max, "{b:?}");
        }
        assert_eq!(
            p.backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(p.backoff(0, Some(Duration::from_secs(600))), p.max);
        assert_eq!(
            p.with_scale(0.5).backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(1)
        );
    }
}
