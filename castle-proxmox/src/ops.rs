//! The idempotent operations of the platform step, over any [`ProxmoxApi`].

use std::time::Duration;

use serde::Serialize;

use crate::api::wait_task;
use crate::{CloneRequest, Error, ProxmoxApi, Result, VmConfig, VmSummary};

/// What Castle owns: VMs carrying `tag` with a VMID inside `range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The ownership tag.
    pub tag: String,
    /// Inclusive VMID range.
    pub range: (u32, u32),
}

impl Fence {
    /// Whether a VM is Castle's to touch.
    pub fn owns(&self, vmid: u32, tags: &[String]) -> bool {
        (self.range.0..=self.range.1).contains(&vmid) && tags.iter().any(|t| t == &self.tag)
    }
}

/// One VM the cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Node name (Proxmox node).
    pub node: String,
    /// VMID.
    pub vmid: u32,
    /// VM name.
    pub name: String,
    /// The template to clone.
    pub template: u32,
    /// Full clone.
    pub full_clone: bool,
    /// Storage for a full clone.
    pub storage: Option<String>,
    /// vCPUs.
    pub cores: u32,
    /// MiB.
    pub memory_mib: u32,
    /// GiB of `scsi0`.
    pub disk_gib: u32,
    /// `virtio,bridge=...`.
    pub net0: String,
    /// `ip=...,gw=...`.
    pub ipconfig0: String,
    /// Tags, the ownership tag among them.
    pub tags: Vec<String>,
    /// Description.
    pub description: String,
}

/// What `ensure_vm` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmOutcome {
    /// Cloned now.
    Created,
    /// Existed already with our name and tag; brought to the spec.
    Adopted,
}

const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// Makes the VM exist, configured and running. Idempotent: a VM with our VMID, name
/// and tag is adopted (a clone interrupted halfway included); a VMID held by
/// anything else is refused, never overwritten.
///
/// # Errors
/// A refused VMID, or the first Proxmox error.
pub async fn ensure_vm(
    api: &dyn ProxmoxApi,
    spec: &VmSpec,
    owner_tag: &str,
    clones: &tokio::sync::Semaphore,
) -> Result<VmOutcome> {
    let outcome = match api.vm_status(&spec.node, spec.vmid).await? {
        Some(status)
            if status.name == spec.name
                && (status.tags.iter().any(|t| t == owner_tag)
                    || status.lock.as_deref() == Some("clone")
                    || status.tags.is_empty()) =>
        {
            if status.template {
                return Err(Error::Refused(format!(
                    "vm {} is a template, not a cluster node",
                    spec.vmid
                )));
            }
            VmOutcome::Adopted
        }
        Some(status) => {
            return Err(Error::Refused(format!(
                "vmid {} is taken by `{}` (tags: {}), which is not this cluster's {}; free the id or change nodes[].vmid",
                spec.vmid,
                status.name,
                if status.tags.is_empty() {
                    "none".into()
                } else {
                    status.tags.join(";")
                },
                spec.name
            )));
        }
        None => {
            let _permit = clones
                .acquire()
                .await
                .map_err(|e| Error::Refused(e.to_string()))?;
            let request = CloneRequest {
                newid: spec.vmid,
                name: spec.name.clone(),
                full: spec.full_clone,
                storage: spec.storage.clone().filter(|_| spec.full_clone),
                description: Some(spec.description.clone()),
            };
            let upid = api.clone_vm(&spec.node, spec.template, &request).await?;
            wait_task(api, &upid, TASK_TIMEOUT).await?;
            VmOutcome::Created
        }
    };
    wait_unlocked(api, spec).await?;
    api.configure(
        &spec.node,
        spec.vmid,
        &VmConfig {
            cores: Some(spec.cores),
            memory: Some(spec.memory_mib),
            net0: Some(spec.net0.clone()),
            ipconfig0: Some(spec.ipconfig0.clone()),
            tags: Some(spec.tags.clone()),
            description: Some(spec.description.clone()),
            onboot: Some(true),
        },
    )
    .await?;
    api.resize_disk(&spec.node, spec.vmid, "scsi0", spec.disk_gib)
        .await
        .or_else(|e| match &e {
            // Already larger than asked: Proxmox never shrinks, and neither do we.
            Error::Api { message, .. } if message.contains("shrinking") => Ok(()),
            _ => Err(e),
        })?;
    let running = api
        .vm_status(&spec.node, spec.vmid)
        .await?
        .is_some_and(|s| s.status == "running");
    if !running {
        let upid = api.start(&spec.node, spec.vmid).await?;
        wait_task(api, &upid, TASK_TIMEOUT).await?;
    }
    Ok(outcome)
}

/// Waits (with backoff) while a VM carries a lock, e.g. a clone still finishing
/// after the process that started it was killed.
async fn wait_unlocked(api: &dyn ProxmoxApi, spec: &VmSpec) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
    let mut delay = Duration::from_millis(250);
    loop {
        match api.vm_status(&spec.node, spec.vmid).await? {
            Some(s) if s.lock.is_some() => {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("vm {} lock `{}`", spec.vmid, s.lock.unwrap_or_default()),
                        seconds: TASK_TIMEOUT.as_secs(),
                    });
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Some(_) => return Ok(()),
            None => {
                return Err(Error::Refused(format!(
                    "vm {} disappeared while Castle configured it",
                    spec.vmid
                )));
            }
        }
    }
}

/// What `destroy_vm` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "reason")]
pub enum DestroyOutcome {
    /// Deleted now.
    Deleted,
    /// Did not exist.
    Absent,
    /// Not Castle's: left alone.
    Skipped(String),
}

/// Deletes a VM if and only if the fence says it is Castle's: graceful shutdown with
/// a deadline, then stop, then delete with purge. A VM already gone is success.
///
/// # Errors
/// The first Proxmox error.
pub async fn destroy_vm(
    api: &dyn ProxmoxApi,
    node: &str,
    vmid: u32,
    fence: &Fence,
    shutdown_deadline: Duration,
) -> Result<DestroyOutcome> {
    let Some(status) = api.vm_status(node, vmid).await? else {
        return Ok(DestroyOutcome::Absent);
    };
    if !fence.owns(vmid, &status.tags) || status.template {
        return Ok(DestroyOutcome::Skipped(format!(
            "vm {vmid} `{}` is not tagged `{}` inside {:?}",
            status.name, fence.tag, fence.range
        )));
    }
    if status.status == "running" {
        let upid = api.shutdown(node, vmid, shutdown_deadline).await?;
        if wait_task(api, &upid, shutdown_deadline).await.is_err()
            || api
                .vm_status(node, vmid)
                .await?
                .is_some_and(|s| s.status == "running")
        {
            let upid = api.stop(node, vmid).await?;
            wait_task(api, &upid, TASK_TIMEOUT).await?;
        }
    }
    let upid = api.delete(node, vmid).await?;
    wait_task(api, &upid, TASK_TIMEOUT).await?;
    Ok(DestroyOutcome::Deleted)
}

/// Every VM the fence says is Castle's (for "nothing left" checks and `--wipe`).
///
/// # Errors
/// The listing failed.
pub async fn list_owned(api: &dyn ProxmoxApi, fence: &Fence) -> Result<Vec<VmSummary>> {
    Ok(api
        .list_vms()
        .await?
        .into_iter()
        .filter(|v| !v.template && fence.owns(v.vmid, &v.tags))
        .collect())
}
