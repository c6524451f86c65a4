//! The Proxmox VE calls Castle makes, and waiting for the tasks they start.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    CloneRequest, Error, NodeInfo, PveVersion, Result, StorageStatus, TaskExit, TaskStatus, Upid,
    VmConfig, VmInfo,
};

/// The Proxmox VE calls Castle makes; used as `Arc<dyn ProxmoxApi>`.
///
/// Calls that start a task return its [`Upid`]; [`wait_task`] waits for it.
#[async_trait]
pub trait ProxmoxApi: Send + Sync + std::fmt::Debug {
    /// `GET /cluster/resources?type=vm`: every VM and template of the cluster.
    async fn list_vms(&self) -> Result<Vec<VmInfo>>;

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`; `None` when no such VM exists.
    async fn vm_status(&self, node: &str, vmid: u32) -> Result<Option<VmInfo>>;

    /// `GET /nodes/{node}/qemu/{vmid}/config`: the current config, values as text.
    async fn vm_config(&self, node: &str, vmid: u32) -> Result<BTreeMap<String, String>>;

    /// `POST /nodes/{node}/qemu/{template}/clone`.
    ///
    /// Not idempotent: after an ambiguous failure, look for the new VM before
    /// cloning again.
    async fn clone_vm(&self, node: &str, template: u32, request: &CloneRequest) -> Result<Upid>;

    /// `PUT /nodes/{node}/qemu/{vmid}/config` (synchronous).
    async fn configure(&self, node: &str, vmid: u32, config: &VmConfig) -> Result<()>;

    /// `PUT /nodes/{node}/qemu/{vmid}/resize` to an absolute size; Proxmox never
    /// shrinks. Newer servers answer with a task, older ones with nothing.
    async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u32,
    ) -> Result<Option<Upid>>;

    /// `POST .../status/start`.
    async fn start(&self, node: &str, vmid: u32) -> Result<Upid>;

    /// `POST .../status/shutdown` (ACPI); the task fails when the guest is not off
    /// within `timeout`.
    async fn shutdown(&self, node: &str, vmid: u32, timeout: Duration) -> Result<Upid>;

    /// `POST .../status/stop`: pulls the plug.
    async fn stop(&self, node: &str, vmid: u32) -> Result<Upid>;

    /// `DELETE /nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1`.
    async fn delete_vm(&self, node: &str, vmid: u32) -> Result<Upid>;

    /// `GET /cluster/nextid`: a free id now; nothing reserves it.
    async fn next_id(&self) -> Result<u32>;

    /// `GET /cluster/nextid?vmid=N`: whether no guest anywhere in the cluster has
    /// that id. Any token may ask (`user => 'all'`), so it tells existence to a token
    /// that may not read the VM itself.
    async fn vmid_free(&self, vmid: u32) -> Result<bool>;

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus>;

    /// `GET /nodes/{node}/tasks/{upid}/log`: the log's last `lines` lines.
    async fn task_log(&self, upid: &Upid, lines: usize) -> Result<Vec<String>>;

    /// `GET /version`: which Proxmox VE answers. Any valid token may ask, so it
    /// also tells whether the server is reachable, trusted and takes the token.
    async fn version(&self) -> Result<PveVersion>;

    /// `GET /access/permissions?path=PATH`: the privileges the token holds on
    /// `path`, each with whether it propagates. The server computes them as its
    /// permission checks do: inheritance along the path, pool membership of
    /// `/vms/ID`, and a privilege-separated token's intersection with its user.
    async fn permissions(&self, path: &str) -> Result<BTreeMap<String, bool>>;

    /// `GET /nodes`: the cluster's nodes and whether each is online (any token).
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;

    /// `GET /nodes/{node}/storage/{storage}/status`: sizes, content types and
    /// state; needs `Datastore.Audit` or `Datastore.AllocateSpace` on
    /// `/storage/{storage}`.
    async fn storage_status(&self, node: &str, storage: &str) -> Result<StorageStatus>;
}

/// First poll delay; most qemu tasks take a second or more.
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(2);
const LOG_TAIL_LINES: usize = 10;

/// Waits for a task to stop, polling with a backoff from 250 ms up to 2 s.
/// `OK` and `WARNINGS: N` are success. A transient error while polling is polled
/// through (polling is a read); the deadline still holds.
///
/// # Errors
/// [`Error::Task`] with the log's last lines when the task failed,
/// [`Error::Timeout`] when it still runs after `timeout`, or a permanent error
/// from polling.
pub async fn wait_task(api: &dyn ProxmoxApi, upid: &Upid, timeout: Duration) -> Result<TaskExit> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = FIRST_POLL;
    loop {
        match api.task_status(upid).await {
            Ok(TaskStatus::Stopped(exit)) if exit.is_success() => return Ok(exit),
            Ok(TaskStatus::Stopped(exit)) => {
                // The log only adds context; its own failure must not hide the task's.
                let log_tail = api.task_log(upid, LOG_TAIL_LINES).await.unwrap_or_default();
                return Err(Error::Task {
                    upid: upid.to_string(),
                    exitstatus: exit.to_string(),
                    log_tail,
                });
            }
            Ok(TaskStatus::Running) => {}
            Err(e) if e.is_transient() => {}
            Err(e) => return Err(e),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: format!("task {} ({} of {})", upid, upid.kind(), upid.id()),
                waited: timeout,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}
