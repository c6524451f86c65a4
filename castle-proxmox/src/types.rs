//! The values that cross the [`crate::ProxmoxApi`] boundary, in Proxmox's own terms.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Whether a VM runs. Proxmox reports `running` or `stopped`, and
/// `/cluster/resources` says `unknown` until the VM's statistics exist (a brand-new
/// VM, a VM on an offline node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// The QEMU process is up.
    Running,
    /// No QEMU process.
    Stopped,
    /// The cluster has no statistics for it yet; ask `.../status/current`.
    Unknown,
}

impl PowerState {
    /// Parses Proxmox's `status` field.
    ///
    /// # Errors
    /// [`Error::Decode`] for any other word.
    pub fn parse(path: &str, word: &str) -> Result<Self> {
        match word {
            "running" => Ok(Self::Running),
            "stopped" => Ok(Self::Stopped),
            "unknown" => Ok(Self::Unknown),
            other => Err(Error::Decode {
                path: path.to_string(),
                reason: format!("unknown VM status `{other}`"),
            }),
        }
    }
}

/// A VM as `GET /cluster/resources?type=vm` and `.../status/current` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Its id.
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// Its name (empty when the listing gives none: an `unknown` entry). While a
    /// clone copies its first disk, `.../status/current` calls it `VM <vmid>`.
    pub name: String,
    /// Running or stopped.
    pub status: PowerState,
    /// A template cannot run and is only cloned from.
    pub template: bool,
    /// Tags, split from Proxmox's `;`-joined string.
    pub tags: Vec<String>,
    /// A config lock (`clone`, `backup`, `migrate`, ...) while one is held.
    pub lock: Option<String>,
    /// Size in bytes of the first disk in the boot order (not necessarily `scsi0`);
    /// 0 when unknown.
    pub maxdisk: u64,
}

impl VmInfo {
    /// Whether the VM carries `tag` (Proxmox compares tags case-insensitively).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// Splits Proxmox's tag string; it accepts `;`, `,` and spaces as separators.
pub(crate) fn split_tags(raw: &str) -> Vec<String> {
    raw.split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /nodes/{node}/qemu/{template}/clone`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneRequest {
    /// The id of the new VM.
    pub newid: u32,
    /// Its name (a DNS label).
    pub name: String,
    /// A full copy instead of a linked clone (templates default to linked).
    pub full: bool,
    /// Target storage; Proxmox allows it for full clones only.
    pub storage: Option<String>,
    /// Target disk format (`raw`, `qcow2`, `vmdk`); Proxmox allows it for full
    /// clones only.
    pub format: Option<String>,
    /// Description of the new VM.
    pub description: Option<String>,
    /// Resource pool the new VM joins (when the clone finishes); a token whose
    /// rights come from a pool needs it to allocate the VMID.
    pub pool: Option<String>,
    /// Target node; Proxmox allows it only when the template is on shared storage.
    pub target: Option<String>,
}

/// The disk formats `clone_vm`'s schema lists for `format`.
pub const CLONE_FORMATS: [&str; 3] = ["raw", "qcow2", "vmdk"];

impl CloneRequest {
    /// What qemu-server's `clone_vm` (`src/PVE/API2/Qemu.pm` at e6352be6) refuses
    /// of the parameters alone, checked before the request is sent: `format` must be
    /// one of [`CLONE_FORMATS`] (the schema's enum), and "parameter 'storage' not
    /// allowed for linked clones", "parameter 'format' not allowed for linked
    /// clones" (its `$load_and_check`).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the parameter; nothing was sent.
    pub fn check(&self) -> Result<()> {
        let invalid = |param: &str, reason: String| Error::Invalid {
            what: format!("clone to {}: parameter '{param}'", self.newid),
            reason,
        };
        if let Some(f) = &self.format
            && !CLONE_FORMATS.contains(&f.as_str())
        {
            return Err(invalid(
                "format",
                format!("'{f}' is not one of {}", CLONE_FORMATS.join(", ")),
            ));
        }
        if !self.full {
            if self.storage.is_some() {
                return Err(invalid(
                    "storage",
                    "Proxmox does not allow it for linked clones: a linked clone's disks live beside the template's base volumes".into(),
                ));
            }
            if self.format.is_some() {
                return Err(invalid(
                    "format",
                    "Proxmox does not allow it for linked clones: a linked clone keeps the template's format".into(),
                ));
            }
        }
        Ok(())
    }

    /// The form parameters as Proxmox names them.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("newid", self.newid.to_string()),
            ("name", self.name.clone()),
            ("full", bool_param(self.full)),
        ];
        if let Some(storage) = &self.storage {
            p.push(("storage", storage.clone()));
        }
        if let Some(format) = &self.format {
            p.push(("format", format.clone()));
        }
        if let Some(description) = &self.description {
            p.push(("description", description.clone()));
        }
        if let Some(pool) = &self.pool {
            p.push(("pool", pool.clone()));
        }
        if let Some(target) = &self.target {
            p.push(("target", target.clone()));
        }
        p
    }
}

/// What `PUT /nodes/{node}/qemu/{vmid}/config` sets; `None` leaves a key alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConfig {
    /// vCPU cores.
    pub cores: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
    /// `virtio[=MAC],bridge=vmbr0[,tag=N]`.
    pub net0: Option<String>,
    /// `ip=CIDR[,gw=IP]` or `ip=dhcp`.
    pub ipconfig0: Option<String>,
    /// Tags, `;`-joined on the wire.
    pub tags: Option<Vec<String>>,
    /// Description (the notes field).
    pub description: Option<String>,
    /// Start with the host.
    pub onboot: Option<bool>,
    /// Other config keys, sent verbatim (e.g. `agent`, `cpu`); the server refuses
    /// keys its schema does not define.
    pub extra: BTreeMap<String, String>,
}

impl VmConfig {
    /// The form parameters as Proxmox names them.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| p.push((k.to_string(), v));
        if let Some(v) = self.cores {
            put("cores", v.to_string());
        }
        if let Some(v) = self.memory_mib {
            put("memory", v.to_string());
        }
        if let Some(v) = &self.net0 {
            put("net0", v.clone());
        }
        if let Some(v) = &self.ipconfig0 {
            put("ipconfig0", v.clone());
        }
        if let Some(v) = &self.tags {
            put("tags", v.join(";"));
        }
        if let Some(v) = &self.description {
            put("description", v.clone());
        }
        if let Some(v) = self.onboot {
            put("onboot", bool_param(v));
        }
        for (k, v) in &self.extra {
            put(k, v.clone());
        }
        p
    }

    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        self.params().is_empty()
    }
}

fn bool_param(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// `GET /version`: which Proxmox VE answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PveVersion {
    /// The full pve-manager version (`8.2.4`; PVE 7 writes `7.4-17`).
    pub version: String,
    /// The point release, `x.y`.
    pub release: String,
    /// The short git revision it was built from.
    pub repoid: String,
}

impl PveVersion {
    /// Major and minor release, from `release` (or `version` when `release` does
    /// not parse).
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let parse = |s: &str| {
            let mut parts = s.split(['.', '-']);
            let major = parts.next()?.trim().parse().ok()?;
            let minor = parts.next()?.trim().parse().ok()?;
            Some((major, minor))
        };
        parse(&self.release).or_else(|| parse(&self.version))
    }
}

/// Whether a cluster node answers, as `GET /nodes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// A quorate cluster member with current statistics.
    Online,
    /// A cluster member that is not online.
    Offline,
    /// No statistics yet (the node just joined, or pvestatd is down there).
    Unknown,
}

/// One node of `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name.
    pub node: String,
    /// Whether it is online.
    pub status: NodeStatus,
}

/// `GET /nodes/{node}/storage/{storage}/status`: sizes in bytes; the server
/// leaves out what it cannot tell (an inactive storage has no sizes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// The storage id.
    pub storage: String,
    /// Its type (`lvmthin`, `zfspool`, `dir`, `rbd`, ...).
    pub kind: String,
    /// Content types it accepts (`images` for VM disks).
    pub content: Vec<String>,
    /// Total space.
    pub total: Option<u64>,
    /// Used space.
    pub used: Option<u64>,
    /// Available space.
    pub avail: Option<u64>,
    /// Not disabled in the storage configuration.
    pub enabled: Option<bool>,
    /// Accessible from the node now.
    pub active: Option<bool>,
    /// Shared between nodes.
    pub shared: Option<bool>,
}

/// One certificate a TLS server presented: enough to tell which CA to pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCert {
    /// Subject distinguished name, `CN=..., O=...`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// SHA-256 of the DER encoding, upper-case hex in colon-separated pairs (what
    /// `openssl x509 -noout -fingerprint -sha256` prints).
    pub sha256: String,
    /// DNS names and IP addresses it is valid for (subjectAltName).
    pub names: Vec<String>,
}

impl PeerCert {
    /// Whether it signed itself (subject and issuer are the same name).
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }
}

/// A task id: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upid {
    raw: String,
    node: String,
    kind: String,
    id: String,
}

impl Upid {
    /// Parses a UPID; Proxmox writes pid and starttime as 8 hex digits and pstart as
    /// 8 or 9.
    ///
    /// # Errors
    /// [`Error::Decode`] when `raw` is not one.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = || Error::Decode {
            path: "task id".into(),
            reason: format!("`{raw}` is not a UPID"),
        };
        let parts: Vec<&str> = raw.split(':').collect();
        let hex = |s: &str, lens: &[usize]| {
            lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
        };
        // The user part may hold `!` (tokens) but not `:`, so a UPID has exactly
        // nine colon-separated fields, the last one empty.
        if parts.len() != 9
            || parts[0] != "UPID"
            || parts[1].is_empty()
            || !hex(parts[2], &[8])
            || !hex(parts[3], &[8, 9])
            || !hex(parts[4], &[8])
            || parts[5].is_empty()
            || parts[7].is_empty()
            || !parts[8].is_empty()
        {
            return Err(bad());
        }
        Ok(Self {
            raw: raw.to_string(),
            node: parts[1].to_string(),
            kind: parts[5].to_string(),
            id: parts[6].to_string(),
        })
    }

    /// The whole id, as the server wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The node that runs the task.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Task type: `qmclone`, `qmstart`, `qmdestroy`, ...
    pub fn kind(&self) -> &str {
        &self.kind
    }
    /// The object it works on (a VMID for qemu tasks).
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Still going.
    Running,
    /// Ended with this exit status.
    Stopped(TaskExit),
}

/// A stopped task's `exitstatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskExit {
    /// `OK`.
    Ok,
    /// `WARNINGS: N`: the task did its work and logged N warnings.
    Warnings(u32),
    /// Anything else: the error text.
    Failed(String),
}

impl TaskExit {
    /// Reads an `exitstatus`.
    pub fn parse(exitstatus: &str) -> Self {
        let s = exitstatus.trim();
        if s == "OK" {
            return Self::Ok;
        }
        if let Some(n) = s
            .strip_prefix("WARNINGS:")
            .and_then(|n| n.trim().parse().ok())
        {
            return Self::Warnings(n);
        }
        Self::Failed(s.to_string())
    }

    /// `OK` and `WARNINGS: N` are success.
    pub fn is_success(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
}

impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("OK"),
            Self::Warnings(n) => write!(f, "WARNINGS: {n}"),
            Self::Failed(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_parses_token_users_and_nine_digit_pstart() {
        let u =
            Upid::parse("UPID:pve1:000A1B2C:123456789:65F0A1B2:qmclone:421:castle@pve!rebirth:")
                .unwrap();
        assert_eq!((u.node(), u.kind(), u.id()), ("pve1", "qmclone", "421"));
        assert_eq!(
            u.to_string(),
            "UPID:pve1:000A1B2C:123456789:65F0A1B2:qmclone:421:castle@pve!rebirth:"
        );
    }

    #[test]
    fn upid_rejects_malformed_ids() {
        for raw in [
            "",
            "UPID:pve:1:2:3:qmstart:1:root@pam:",
            "UPID::000A1B2C:0123ABCD:65F0A1B2:qmstart:1:root@pam:",
            "UPID:pve:000A1B2C:0123ABCD:65F0A1B2:qmstart:1:root@pam",
            "UPID:pve:000A1B2X:0123ABCD:65F0A1B2:qmstart:1:root@pam:",
            "TASK:pve:000A1B2C:0123ABCD:65F0A1B2:qmstart:1:root@pam:",
        ] {
            assert!(Upid::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn exit_status_success_rules() {
        assert_eq!(TaskExit::parse("OK"), TaskExit::Ok);
        assert_eq!(TaskExit::parse("WARNINGS: 3"), TaskExit::Warnings(3));
        assert!(TaskExit::parse("WARNINGS: 3").is_success());
        let failed =
            TaskExit::parse("can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout");
        assert!(!failed.is_success());
        assert!(!TaskExit::parse("WARNINGS: many").is_success());
    }

    #[test]
    fn config_params_use_wire_names() {
        let c = VmConfig {
            memory_mib: Some(4096),
            tags: Some(vec!["castle".into(), "k8s".into()]),
            onboot: Some(true),
            ..VmConfig::default()
        };
        assert_eq!(
            c.params(),
            vec![
                ("memory".to_string(), "4096".to_string()),
                ("tags".to_string(), "castle;k8s".to_string()),
                ("onboot".to_string(), "1".to_string()),
            ]
        );
    }
}
