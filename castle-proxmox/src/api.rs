use std::time::Duration;

use async_trait::async_trait;

use crate::{CloneRequest, Result, Upid, VmConfig, VmStatus, VmSummary};

/// The Proxmox VE calls Castle makes.
#[async_trait]
pub trait ProxmoxApi: Send + Sync + std::fmt::Debug {
    /// `GET /cluster/resources?type=vm`.
    async fn list_vms(&self) -> Result<Vec<VmSummary>>;
    /// `GET /nodes/{node}/qemu/{vmid}/status/current`; `None` when it does not exist.
    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmStatus>>;
    /// `POST /nodes/{node}/qemu/{template}/clone`.
    async fn clone_vm(&self, node: &str, template: u32, request: &CloneRequest) -> Result<Upid>;
    /// `PUT /nodes/{node}/qemu/{vmid}/config` (synchronous).
    async fn configure(&self, node: &str, vmid: u32, config: &VmConfig) -> Result<()>;
    /// `PUT /nodes/{node}/qemu/{vmid}/resize` to an absolute size in GiB (never shrinks).
    async fn resize_disk(&self, node: &str, vmid: u32, disk: &str, gib: u32) -> Result<()>;
    /// `POST .../status/start`.
    async fn start(&self, node: &str, vmid: u32) -> Result<Upid>;
    /// `POST .../status/shutdown` with a timeout in seconds.
    async fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Upid>;
    /// `POST .../status/stop`.
    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid>;
    /// `DELETE /nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1`.
    async fn delete(&self, node: &str, vmid: u32) -> Result<Upid>;
    /// `GET /cluster/nextid`.
    async fn next_id(&self) -> Result<u32>;
    /// `GET /nodes/{node}/tasks/{upid}/status`: `None` while running, else the exit status.
    async fn task_status(&self, upid: &Upid) -> Result<Option<String>>;
    /// `GET /nodes/{node}/tasks/{upid}/log`: the last `lines` lines.
    async fn task_log_tail(&self, upid: &Upid, lines: usize) -> Result<String>;
}

/// Polls a task until it stops: backoff from 250 ms to 2 s. `OK` and `WARNINGS: N`
/// are success; anything else is an error carrying the log's tail.
///
/// # Errors
/// [`crate::Error::Task`] or [`crate::Error::Timeout`].
pub async fn wait_task(api: &dyn ProxmoxApi, upid: &Upid, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(250);
    loop {
        if let Some(exit) = api.task_status(upid).await? {
            if exit == "OK" || exit.starts_with("WARNINGS:") {
                return Ok(());
            }
            let log_tail = api.task_log_tail(upid, 5).await.unwrap_or_default();
            return Err(crate::Error::Task {
                upid: upid.raw.clone(),
                exitstatus: exit,
                log_tail,
            });
        }
        if tokio::time::Instant::now() + delay > deadline {
            return Err(crate::Error::Timeout {
                what: format!("task {} ({} {})", upid.raw, upid.kind, upid.id),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
