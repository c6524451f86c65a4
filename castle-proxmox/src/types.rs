use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A VM as listed by `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// VMID.
    pub vmid: u32,
    /// Node it lives on.
    pub node: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `running` or `stopped`.
    #[serde(default)]
    pub status: String,
    /// Whether it is a template.
    #[serde(default)]
    pub template: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A lock (`clone`, `create`, ...), if any.
    #[serde(default)]
    pub lock: Option<String>,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Lock, if any.
    pub lock: Option<String>,
    /// Whether it is a template.
    pub template: bool,
}

/// Parameters of a clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloneRequest {
    /// The new VMID.
    pub newid: u32,
    /// The new VM's name.
    pub name: String,
    /// Full clone instead of linked.
    pub full: bool,
    /// Target storage (full clones only).
    pub storage: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// What `configure` sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmConfig {
    /// vCPUs.
    pub cores: Option<u32>,
    /// Memory, MiB.
    pub memory: Option<u32>,
    /// `virtio,bridge=vmbr0[,tag=N]`.
    pub net0: Option<String>,
    /// `ip=CIDR,gw=IP`.
    pub ipconfig0: Option<String>,
    /// Tags, `;`-joined on the wire.
    pub tags: Option<Vec<String>>,
    /// Description.
    pub description: Option<String>,
    /// Start on boot.
    pub onboot: Option<bool>,
}

impl VmConfig {
    /// The form parameters, as Proxmox names them.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(v) = self.cores {
            p.push(("cores", v.to_string()));
        }
        if let Some(v) = self.memory {
            p.push(("memory", v.to_string()));
        }
        if let Some(v) = &self.net0 {
            p.push(("net0", v.clone()));
        }
        if let Some(v) = &self.ipconfig0 {
            p.push(("ipconfig0", v.clone()));
        }
        if let Some(v) = &self.tags {
            p.push(("tags", v.join(";")));
        }
        if let Some(v) = &self.description {
            p.push(("description", v.clone()));
        }
        if let Some(v) = self.onboot {
            p.push(("onboot", if v { "1" } else { "0" }.to_string()));
        }
        p
    }
}

/// A task id: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upid {
    /// The raw id.
    pub raw: String,
    /// The node that runs it.
    pub node: String,
    /// Task type (`qmclone`, `qmstart`, ...).
    pub kind: String,
    /// The object it works on (the VMID).
    pub id: String,
}

impl Upid {
    /// Parses a UPID.
    ///
    /// # Errors
    /// [`Error::Decode`] when it is not one.
    pub fn parse(raw: &str) -> Result<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let hex = |s: &str, lens: &[usize]| {
            lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
        };
        if parts.len() < 9
            || parts[0] != "UPID"
            || parts[1].is_empty()
            || !hex(parts[2], &[8])
            || !hex(parts[3], &[8, 9])
            || !hex(parts[4], &[8])
        {
            return Err(Error::Decode {
                path: "task".into(),
                reason: format!("`{raw}` is not a UPID"),
            });
        }
        Ok(Self {
            raw: raw.to_string(),
            node: parts[1].into(),
            kind: parts[5].into(),
            id: parts[6].into(),
        })
    }
}

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}
