//! `castle doctor` for Proxmox VE: read-only calls turned into [`Finding`]s, each
//! failure or warning with the command that fixes it. Nothing here writes.
//!
//! The privileges are the ones qemu-server checks for the calls Castle makes
//! (`src/PVE/API2/Qemu.pm` at e6352be6: `clone_vm`, `check_vm_modify_config_perm`,
//! `resize_vm`, `vm_start`/`vm_stop`/`vm_shutdown`, `destroy_vm`, `vm_status`,
//! `vm_config`; pve-guest-common `GuestHelpers.pm` at 4a8f6cbf:
//! `assert_tag_permissions`, `check_vnet_access`), asked of
//! `GET /access/permissions`, so the server applies its own inheritance, pool and
//! privilege-separation rules (pve-access-control `RPCEnvironment.pm` at 5ccd07d9).

use std::collections::{BTreeMap, BTreeSet};

use castle_probe::Finding;

use super::{Fence, boot_disk, is_drive_name, parse_size};
use crate::{Error, NodeStatus, PowerState, ProxmoxApi, PveVersion, VmInfo};

const SYSTEM: &str = "proxmox";

/// The releases Castle is tested against: PVE 7.x (errors in the reason
/// phrase) to 9.x.
const TESTED: ((u32, u32), (u32, u32)) = ((7, 0), (9, u32::MAX));

/// What a linked clone takes up front: its disks are thin copies of the template's
/// base volumes and grow as the guest writes.
const LINKED_CLONE_GIB_PER_DISK: u64 = 1;

/// The privileges on the template (PVETemplateUser holds exactly these).
pub(crate) const TEMPLATE_PRIVILEGES: &[(&str, &str)] = &[
    ("VM.Audit", "read the template's config"),
    ("VM.Clone", "clone the template"),
];

/// The privileges on each of Castle's VMs (PVEVMAdmin holds them all).
/// `ipconfig0` needs `VM.Config.Cloudinit` or `VM.Config.Network`, and
/// `VM.Config.Network` is needed anyway; `tags` needs `VM.Config.Options` (and
/// `Sys.Modify` on `/` only when datacenter.cfg restricts user tags).
pub(crate) const VM_PRIVILEGES: &[(&str, &str)] = &[
    ("VM.Allocate", "create it by cloning and delete it"),
    ("VM.Audit", "read its status and config, list it"),
    ("VM.Config.CPU", "set cores"),
    ("VM.Config.Disk", "grow the boot disk"),
    ("VM.Config.Memory", "set memory"),
    ("VM.Config.Network", "set net0 and ipconfig0"),
    ("VM.Config.Options", "set description, onboot and tags"),
    ("VM.PowerMgmt", "start, shut down and stop it"),
];

/// On the storage the disks go to (PVEDatastoreUser).
pub(crate) const STORAGE_PRIVILEGE: (&str, &str) = (
    "Datastore.AllocateSpace",
    "allocate the clones' disks and grow them",
);

/// On each bridge (and VLAN) a NIC uses, PVE 8 and later (PVESDNUser).
pub(crate) const BRIDGE_PRIVILEGE: &str = "SDN.Use";

/// One VM of the cluster, as far as the preflight needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVm {
    /// Its fixed VMID.
    pub vmid: u32,
    /// Its name (`<cluster>-<node>`).
    pub name: String,
    /// Boot disk size in GiB.
    pub disk_gib: u32,
}

/// What `castle doctor` checks on Proxmox VE: the config's `[proxmox]` section
/// and the nodes.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// `USER@REALM!TOKENID`, for the `pveum` fixes.
    pub token_id: String,
    /// The node the template lives on (clones are made there).
    pub node: String,
    /// The node the clones go to, when not `node`.
    pub target: Option<String>,
    /// The template's VMID.
    pub template: u32,
    /// Target storage of full clones.
    pub storage: Option<String>,
    /// The bridge of the VMs' NIC.
    pub bridge: String,
    /// The NIC's VLAN tag.
    pub vlan: Option<u16>,
    /// The resource pool the clones join.
    pub pool: Option<String>,
    /// Full instead of linked clones.
    pub full_clone: bool,
    /// The cluster's VMs.
    pub vms: Vec<PlannedVm>,
    /// What Castle owns: its tag, the cluster's identity tag, the VMID range (and
    /// the clones the journal recorded).
    pub fence: Fence,
}

impl Preflight {
    fn user(&self) -> &str {
        self.token_id
            .split_once('!')
            .map_or(self.token_id.as_str(), |(user, _)| user)
    }

    /// `pveum acl modify PATH --roles ROLE ...`: the user too, since a
    /// privilege-separated token holds only what its user also holds.
    fn grant(&self, path: &str, role: &str) -> String {
        format!(
            "pveum acl modify {path} --roles {role} --users {} --tokens '{}' \
             (the user needs it too when the token has privilege separation)",
            self.user(),
            self.token_id
        )
    }
}

/// What the template's config says.
#[derive(Debug, Default)]
struct Template {
    /// The boot disk's size in bytes.
    boot_bytes: u64,
    /// Sizes in bytes of its other disks.
    other_bytes: u64,
    /// How many disks (boot included).
    disks: u64,
    /// The storages its disks are on, the boot disk's first.
    storages: Vec<String>,
    /// The `(bridge, tag)` of each NIC.
    nics: Vec<(String, Option<String>)>,
    /// A template (else a plain VM, which only full clones copy).
    is_template: bool,
}

/// Checks, read-only, everything a `castle create` needs from Proxmox VE:
/// reachable and trusted; the API version; the token; the node (and target)
/// online; the template; the token's privileges on every path Castle touches;
/// each VMID free or already Castle's; room on the storage. Stops early when the
/// server cannot be reached or refuses the token, since nothing else can be told.
pub async fn preflight(api: &dyn ProxmoxApi, p: &Preflight) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(version) = connection(api, p, &mut out).await else {
        return out;
    };
    nodes(api, p, &mut out).await;
    let template = template(api, p, &mut out).await;
    if let Some(t) = &template {
        clone_mode(api, p, t, &mut out).await;
    }
    let mut vm_findings = Vec::new();
    let existing = vmids(api, p, &mut vm_findings).await;
    privileges(api, p, &version, template.as_ref(), &existing, &mut out).await;
    out.extend(vm_findings);
    storage(api, p, template.as_ref(), &existing, &mut out).await;
    out
}

/// Reachable, TLS, token, version: `GET /version` answers all four.
async fn connection(
    api: &dyn ProxmoxApi,
    p: &Preflight,
    out: &mut Vec<Finding>,
) -> Option<PveVersion> {
    let e = match api.version().await {
        Ok(v) => {
            out.push(Finding::pass(
                SYSTEM,
                "reachable",
                "the API answered GET /version",
            ));
            out.push(Finding::pass(
                SYSTEM,
                "TLS trusted",
                "the server's certificate verified (unless proxmox.insecure turns the check off)",
            ));
            out.push(Finding::pass(
                SYSTEM,
                "token valid",
                format!("the server accepted {}", p.token_id),
            ));
            out.push(version_finding(&v));
            return Some(v);
        }
        Err(e) => e,
    };
    match &e {
        Error::Tls { reason, chain, .. } => {
            out.push(Finding::pass(SYSTEM, "reachable", "a TLS server answered"));
            let presented = match chain.first() {
                Some(leaf) => format!(
                    "; it presented `{}` (valid for {}) issued by `{}`, sha256 {}",
                    leaf.subject,
                    if leaf.names.is_empty() {
                        "no subjectAltName".to_string()
                    } else {
                        leaf.names.join(", ")
                    },
                    leaf.issuer,
                    leaf.sha256
                ),
                None => "; its chain could not be read a second time".into(),
            };
            let fix = if reason.contains("NotValidForName") {
                "put one of the names the certificate is valid for in proxmox.endpoint, or \
                 reissue the certificate (`pvecm updatecerts --force` on the node)"
                    .to_string()
            } else {
                crate::error::tls_fix(chain)
            };
            out.push(Finding::fail(
                SYSTEM,
                "TLS trusted",
                format!("the handshake failed: {reason}{presented}"),
                fix,
            ));
        }
        Error::Api { status: 401, .. } => {
            out.push(Finding::pass(SYSTEM, "reachable", "the API answered"));
            out.push(Finding::fail(
                SYSTEM,
                "token valid",
                format!(
                    "the server refused {} (401 authentication failure)",
                    p.token_id
                ),
                format!(
                    "check proxmox.token_id (USER@REALM!TOKENID) and the token secret; \
                     `pveum user token list {}` lists the tokens; a secret is shown only \
                     when created: `pveum user token add {} {} --privsep 1`",
                    p.user(),
                    p.user(),
                    p.token_id.split_once('!').map_or("castle", |(_, id)| id)
                ),
            ));
        }
        _ => out.push(Finding::fail(
            SYSTEM,
            "reachable",
            e.to_string(),
            "check proxmox.endpoint (https://HOST:8006), that pveproxy runs on the node \
             (`systemctl status pveproxy`) and that port 8006 is open from here",
        )),
    }
    None
}

fn version_finding(v: &PveVersion) -> Finding {
    let check = "API version";
    let detail = format!("pve-manager {} (release {})", v.version, v.release);
    let (lo, hi) = TESTED;
    match v.major_minor() {
        None => Finding::warn(
            SYSTEM,
            check,
            format!("{detail}: not a version Castle can read"),
            "check `pveversion` on the node; Castle is tested against PVE 7.x to 9.x",
        ),
        Some(mm) if mm < lo => Finding::warn(
            SYSTEM,
            check,
            format!("{detail}: older than any release Castle is tested against (7.x to 9.x)"),
            "upgrade Proxmox VE to 8.x or later (https://pve.proxmox.com/wiki/Upgrade_from_7_to_8)",
        ),
        Some(mm) if mm > hi => Finding::warn(
            SYSTEM,
            check,
            format!("{detail}: newer than the releases Castle is tested against (7.x to 9.x)"),
            "run `castle plan` first and watch the first create; report what differs",
        ),
        Some((7, _)) => Finding::pass(
            SYSTEM,
            check,
            format!("{detail}: errors come only in the HTTP reason phrase, which Castle reads"),
        ),
        Some(_) => Finding::pass(SYSTEM, check, detail),
    }
}

/// The node, and the target node, are cluster members and online.
async fn nodes(api: &dyn ProxmoxApi, p: &Preflight, out: &mut Vec<Finding>) {
    let wanted: Vec<(&str, &str)> = std::iter::once((p.node.as_str(), "proxmox.node"))
        .chain(
            p.target
                .as_deref()
                .filter(|t| *t != p.node)
                .map(|t| (t, "proxmox.target")),
        )
        .collect();
    let listed = match api.nodes().await {
        Ok(n) => n,
        Err(e) => {
            for (node, _) in wanted {
                out.push(Finding::warn(
                    SYSTEM,
                    format!("node {node} online"),
                    format!("GET /nodes failed: {e}"),
                    "run `pvecm status` on a node to see the cluster's members",
                ));
            }
            return;
        }
    };
    let names: Vec<&str> = listed.iter().map(|n| n.node.as_str()).collect();
    for (node, key) in wanted {
        let check = format!("node {node} online");
        out.push(match listed.iter().find(|n| n.node == node) {
            None => Finding::fail(
                SYSTEM,
                check,
                format!(
                    "no node `{node}` in the cluster (it has {})",
                    names.join(", ")
                ),
                format!("set {key} to one of: {}", names.join(", ")),
            ),
            Some(n) if n.status == NodeStatus::Online => Finding::pass(SYSTEM, check, "online"),
            Some(n) if n.status == NodeStatus::Offline => Finding::fail(
                SYSTEM,
                check,
                "the cluster reports it offline",
                format!(
                    "start the node or fix its cluster link (`pvecm status` on a member), \
                     or set {key} to an online node"
                ),
            ),
            Some(_) => Finding::warn(
                SYSTEM,
                check,
                "the cluster has no current status for it",
                format!("check `systemctl status pvestatd` on {node}"),
            ),
        });
    }
}

/// The template exists on the node, is a template and has a boot disk; returns
/// what its config says about disks and NICs.
async fn template(api: &dyn ProxmoxApi, p: &Preflight, out: &mut Vec<Finding>) -> Option<Template> {
    let id = p.template;
    let check = format!("template {id}");
    let vm = match api.vm_status(&p.node, id).await {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            out.push(Finding::fail(
                SYSTEM,
                check,
                format!("no VM {id} on node {}", p.node),
                format!(
                    "set proxmox.template_vmid (and proxmox.node) to the Talos template, or \
                     make one: import the Talos nocloud image as VM {id} and run `qm template {id}`"
                ),
            ));
            return None;
        }
        Err(e) => {
            let fix = if e.is_forbidden() {
                p.grant(&format!("/vms/{id}"), "PVETemplateUser")
            } else {
                format!(
                    "`qm status {id}` on {} tells what the API could not",
                    p.node
                )
            };
            out.push(Finding::fail(
                SYSTEM,
                check,
                format!("cannot read VM {id}: {e}"),
                fix,
            ));
            return None;
        }
    };
    let kind = if vm.template {
        Finding::pass(
            SYSTEM,
            check.clone(),
            format!("`{}` is a template", vm.name),
        )
    } else if p.full_clone {
        Finding::warn(
            SYSTEM,
            check.clone(),
            format!(
                "`{}` is a plain VM: full clones of it work, but a running one is copied mid-write",
                vm.name
            ),
            format!("make it a template: `qm template {id}` (while it is stopped)"),
        )
    } else {
        Finding::fail(
            SYSTEM,
            check.clone(),
            format!(
                "`{}` is a plain VM: Proxmox makes linked clones only of templates",
                vm.name
            ),
            format!(
                "make it a template: `qm template {id}` (while it is stopped), or set proxmox.full_clone = true"
            ),
        )
    };
    out.push(kind);
    let config = match api.vm_config(&p.node, id).await {
        Ok(c) => c,
        Err(e) => {
            let fix = if e.is_forbidden() {
                p.grant(&format!("/vms/{id}"), "PVETemplateUser")
            } else {
                format!("`qm config {id}` on {} shows the config", p.node)
            };
            out.push(Finding::fail(
                SYSTEM,
                format!("template {id} boot disk"),
                format!("cannot read its config: {e}"),
                fix,
            ));
            return None;
        }
    };
    let check = format!("template {id} boot disk");
    let Some((boot, boot_bytes)) = boot_disk(&config) else {
        let order = config.get("boot").map_or("(none)", String::as_str);
        out.push(Finding::fail(
            SYSTEM,
            check,
            format!("no disk with a volume in its boot order (`boot: {order}`)"),
            format!("`qm set {id} --boot order=scsi0` (the disk holding Talos)"),
        ));
        return None;
    };
    out.push(Finding::pass(
        SYSTEM,
        check,
        format!("boots from {boot} ({})", gib_text(boot_bytes)),
    ));
    Some(Template {
        is_template: vm.template,
        ..read_template(&config, &boot, boot_bytes)
    })
}

/// Whether create can make linked clones: the storage of each of the template's
/// disks must have pve-storage's `clone` feature ([`crate::features`]); a linked
/// clone's disks stay there, so `proxmox.storage` serves full clones only.
async fn clone_mode(api: &dyn ProxmoxApi, p: &Preflight, t: &Template, out: &mut Vec<Finding>) {
    let check = "linked clones";
    if p.full_clone {
        out.push(Finding::pass(
            SYSTEM,
            check,
            format!(
                "not wanted (proxmox.full_clone = true): full clones onto {}",
                p.storage
                    .as_deref()
                    .map_or_else(|| t.storages.join(", "), str::to_string)
            ),
        ));
        return;
    }
    if !t.is_template {
        // The template's own finding says what to do.
        return;
    }
    let mut linking = Vec::new();
    for sid in &t.storages {
        let kind = match api.storage_status(&p.node, sid).await {
            Ok(status) => status.kind,
            Err(e) => {
                out.push(Finding::warn(
                    SYSTEM,
                    check,
                    format!("cannot tell: the type of storage {sid} is not readable: {e}"),
                    p.grant(&format!("/storage/{sid}"), "PVEDatastoreUser"),
                ));
                return;
            }
        };
        if !crate::features::links_templates(&kind) {
            out.push(Finding::warn(
                SYSTEM,
                check,
                format!(
                    "not possible: storage {sid} ({kind}) holding the template's disks cannot make linked clones (pve-storage volume_has_feature 'clone'); create makes full clones, which copy every disk"
                ),
                format!(
                    "move the template's disks to a storage that links (lvmthin, zfspool, rbd, btrfs, a directory storage), e.g. `qm disk move {} scsi0 local-lvm`, or set proxmox.full_clone = true to say so",
                    p.template
                ),
            ));
            return;
        }
        linking.push(format!("{sid} ({kind})"));
    }
    match p.storage.as_deref() {
        Some(sid) if !t.storages.iter().any(|s| s == sid) => out.push(Finding::warn(
            SYSTEM,
            check,
            format!(
                "possible on {}, where the clones' disks stay: proxmox.storage = \"{sid}\" applies to full clones only (Proxmox refuses `storage` for a linked clone)",
                linking.join(", ")
            ),
            format!(
                "remove proxmox.storage, or set proxmox.full_clone = true to copy the disks onto {sid}"
            ),
        )),
        _ => out.push(Finding::pass(
            SYSTEM,
            check,
            format!(
                "possible: the template's disks are on {}, which links (pve-storage volume_has_feature 'clone')",
                linking.join(", ")
            ),
        )),
    }
}

fn read_template(config: &BTreeMap<String, String>, boot: &str, boot_bytes: u64) -> Template {
    let mut t = Template {
        boot_bytes,
        ..Template::default()
    };
    let storage_of = |value: &str| {
        let volume = value.split(',').next().unwrap_or_default();
        let volume = volume.strip_prefix("file=").unwrap_or(volume);
        volume
            .split_once(':')
            .map(|(sid, _)| sid.to_string())
            .filter(|sid| !sid.is_empty())
    };
    // The boot disk's storage first: it is where a linked clone's disks live.
    if let Some(sid) = config.get(boot).and_then(|v| storage_of(v)) {
        t.storages.push(sid);
    }
    for (key, value) in config {
        if key
            .strip_prefix("net")
            .is_some_and(|n| n.parse::<u8>().is_ok())
            && let Some(bridge) = value
                .split(',')
                .find_map(|part| part.strip_prefix("bridge="))
        {
            let tag = value
                .split(',')
                .find_map(|part| part.strip_prefix("tag="))
                .map(str::to_string);
            t.nics.push((bridge.to_string(), tag));
        }
        if !is_drive_name(key) || value.contains("media=cdrom") {
            continue;
        }
        let Some(sid) = storage_of(value) else {
            continue;
        };
        t.disks += 1;
        if key != boot {
            t.other_bytes += value
                .split(',')
                .find_map(|part| part.strip_prefix("size="))
                .and_then(parse_size)
                .unwrap_or(0);
        }
        if !t.storages.contains(&sid) {
            t.storages.push(sid);
        }
    }
    t
}

/// One set of privileges on one ACL path (or, for a VM that does not exist yet
/// in a pool, on the union of `/vms/ID` and `/pool/NAME`, which is what it will
/// hold once the clone joins the pool).
struct Scope {
    check: String,
    ask: Vec<String>,
    grant_on: String,
    role: &'static str,
    needs: Vec<(&'static str, String)>,
}

async fn privileges(
    api: &dyn ProxmoxApi,
    p: &Preflight,
    version: &PveVersion,
    template: Option<&Template>,
    existing: &BTreeMap<u32, VmInfo>,
    out: &mut Vec<Finding>,
) {
    let mut cache: BTreeMap<String, Result<BTreeMap<String, bool>, String>> = BTreeMap::new();
    for scope in scopes(p, version, template, existing) {
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut failed = None;
        for path in &scope.ask {
            if !cache.contains_key(path) {
                let answer = api.permissions(path).await.map_err(|e| e.to_string());
                cache.insert(path.clone(), answer);
            }
            match cache.get(path) {
                Some(Ok(privileges)) => held.extend(privileges.keys().cloned()),
                Some(Err(e)) => failed = Some(e.clone()),
                None => {}
            }
        }
        if let Some(e) = failed {
            out.push(Finding::warn(
                SYSTEM,
                scope.check,
                format!("GET /access/permissions failed: {e}"),
                format!(
                    "check by hand with `pveum user permissions '{}' --path {}`",
                    p.token_id, scope.grant_on
                ),
            ));
            continue;
        }
        let missing: Vec<String> = scope
            .needs
            .iter()
            .filter(|(privilege, _)| !held.contains(*privilege))
            .map(|(privilege, why)| format!("{privilege} ({why})"))
            .collect();
        let needed: Vec<&str> = scope
            .needs
            .iter()
            .map(|(privilege, _)| *privilege)
            .collect();
        out.push(if missing.is_empty() {
            Finding::pass(SYSTEM, scope.check, format!("holds {}", needed.join(", ")))
        } else {
            Finding::fail(
                SYSTEM,
                scope.check,
                format!("the token lacks {}", missing.join(", ")),
                p.grant(&scope.grant_on, scope.role),
            )
        });
    }
}

fn scopes(
    p: &Preflight,
    version: &PveVersion,
    template: Option<&Template>,
    existing: &BTreeMap<u32, VmInfo>,
) -> Vec<Scope> {
    let mut scopes = vec![Scope {
        check: format!("privileges on /vms/{} (template)", p.template),
        ask: vec![format!("/vms/{}", p.template)],
        grant_on: format!("/vms/{}", p.template),
        role: "PVETemplateUser",
        needs: TEMPLATE_PRIVILEGES
            .iter()
            .map(|(privilege, why)| (*privilege, (*why).to_string()))
            .collect(),
    }];
    let vm_needs: Vec<(&'static str, String)> = VM_PRIVILEGES
        .iter()
        .map(|(privilege, why)| (*privilege, (*why).to_string()))
        .collect();
    for vm in &p.vms {
        let path = format!("/vms/{}", vm.vmid);
        // A VM that exists gets its pool's privileges from the server; a new one
        // gets them once the clone joins the pool.
        let (ask, grant_on) = match &p.pool {
            Some(pool) if !existing.contains_key(&vm.vmid) => (
                vec![path.clone(), format!("/pool/{pool}")],
                format!("/pool/{pool}"),
            ),
            Some(pool) => (vec![path.clone()], format!("/pool/{pool}")),
            None => (vec![path.clone()], path.clone()),
        };
        scopes.push(Scope {
            check: format!("privileges on {path} ({})", vm.name),
            ask,
            grant_on,
            role: "PVEVMAdmin",
            needs: vm_needs.clone(),
        });
    }
    // qemu-server `check_storage_access_clone`: each template disk's storage, or
    // the `storage` a full clone names; `resize_vm`: the disk's storage.
    let storages: Vec<String> = match (&p.storage, template) {
        (Some(sid), _) if p.full_clone => vec![sid.clone()],
        (_, Some(t)) => t.storages.clone(),
        (Some(sid), None) => vec![sid.clone()],
        (None, None) => Vec::new(),
    };
    for sid in storages {
        let path = format!("/storage/{sid}");
        scopes.push(Scope {
            check: format!("privileges on {path}"),
            ask: vec![path.clone()],
            grant_on: path,
            role: "PVEDatastoreUser",
            needs: vec![(STORAGE_PRIVILEGE.0, STORAGE_PRIVILEGE.1.to_string())],
        });
    }
    // pve-guest-common `check_vnet_access` (PVE 8+): the template's NICs when
    // cloning, Castle's NIC when configuring. A bridge that is an SDN vnet lives
    // in its own zone instead of `localnetwork`.
    if version.major_minor().is_none_or(|mm| mm >= (8, 0)) {
        let mut bridges: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let path = |bridge: &str, tag: Option<&str>| match tag {
            Some(tag) => format!("/sdn/zones/localnetwork/{bridge}/{tag}"),
            None => format!("/sdn/zones/localnetwork/{bridge}"),
        };
        for (bridge, tag) in template.map(|t| t.nics.as_slice()).unwrap_or_default() {
            bridges
                .entry(path(bridge, tag.as_deref()))
                .or_default()
                .push("the clone copies the template's NIC");
        }
        let vlan = p.vlan.map(|v| v.to_string());
        bridges
            .entry(path(&p.bridge, vlan.as_deref()))
            .or_default()
            .push("Castle sets net0 there");
        for (path, why) in bridges {
            scopes.push(Scope {
                check: format!("privileges on {path}"),
                ask: vec![path.clone()],
                grant_on: path,
                role: "PVESDNUser",
                needs: vec![(BRIDGE_PRIVILEGE, why.join("; "))],
            });
        }
    }
    scopes
}

/// Each wanted VMID is free or already Castle's; returns the VMs create would
/// adopt.
async fn vmids(
    api: &dyn ProxmoxApi,
    p: &Preflight,
    out: &mut Vec<Finding>,
) -> BTreeMap<u32, VmInfo> {
    let listed: BTreeMap<u32, VmInfo> = match api.list_vms().await {
        Ok(vms) => vms.into_iter().map(|v| (v.vmid, v)).collect(),
        Err(e) => {
            out.push(Finding::warn(
                SYSTEM,
                "vmids",
                format!("GET /cluster/resources failed: {e}"),
                "check the VMIDs by hand with `qm list` on each node",
            ));
            return BTreeMap::new();
        }
    };
    let (lo, hi) = (p.fence.vmid_range.start(), p.fence.vmid_range.end());
    let mut existing = BTreeMap::new();
    for want in &p.vms {
        let id = want.vmid;
        let check = format!("vmid {id} ({})", want.name);
        let other_id = format!(
            "give node `{}` a free vmid inside proxmox.vmid_range ({lo}-{hi})",
            want.name
        );
        if !p.fence.vmid_range.contains(&id) || id == p.template {
            out.push(Finding::fail(
                SYSTEM,
                check,
                if id == p.template {
                    "it is the template's id".to_string()
                } else {
                    format!("outside proxmox.vmid_range {lo}-{hi}: Castle refuses to touch it")
                },
                other_id,
            ));
            continue;
        }
        let Some(vm) = listed.get(&id) else {
            out.push(match api.vmid_free(id).await {
                Ok(true) => Finding::pass(SYSTEM, check, "free: create clones it"),
                Ok(false) => Finding::fail(
                    SYSTEM,
                    check,
                    "taken by a guest this token may not see (a VM outside its rights, or a container)",
                    format!("{other_id}, or grant VM.Audit on /vms/{id} to see what holds it"),
                ),
                Err(e) => Finding::warn(
                    SYSTEM,
                    check,
                    format!("GET /cluster/nextid?vmid={id} failed: {e}"),
                    format!("check by hand: `qm status {id}` on each node"),
                ),
            });
            continue;
        };
        let holder = format!(
            "`{}` on {} (tags: {})",
            if vm.name.is_empty() {
                "(no name)"
            } else {
                &vm.name
            },
            vm.node,
            if vm.tags.is_empty() {
                "none".to_string()
            } else {
                vm.tags.join(";")
            }
        );
        let refusal = p.fence.refusal(vm);
        let cloning = vm.lock.as_deref() == Some("clone");
        // The same reading as `ensure_vm`'s: an unfinished clone of an earlier run
        // has Castle's name but not yet its tag.
        let unfinished =
            vm.name == want.name && !vm.has_tag(&p.fence.tag) && vm.status != PowerState::Running;
        let finding = match &refusal {
            None if vm.name == want.name => Finding::pass(
                SYSTEM,
                check,
                format!("already Castle's: {holder}; create adopts it"),
            ),
            None if cloning => Finding::pass(
                SYSTEM,
                check,
                "a clone this cluster's journal recorded, still running; create resumes it",
            ),
            None => Finding::fail(
                SYSTEM,
                check,
                format!("held by {holder}, which carries this cluster's tags but a different name"),
                format!("rename it to `{}` or {other_id}", want.name),
            ),
            Some(_) if unfinished => Finding::warn(
                SYSTEM,
                check,
                format!(
                    "held by {holder}: Castle's name without its tag, as an interrupted clone leaves it; create adopts it"
                ),
                format!("if it is not Castle's, delete it or {other_id}"),
            ),
            Some(why) => Finding::fail(
                SYSTEM,
                check,
                format!("taken by {holder}: {why}"),
                format!("{other_id}, or remove that VM if it is no longer needed"),
            ),
        };
        if finding.status != castle_probe::Status::Fail {
            existing.insert(id, vm.clone());
        }
        out.push(finding);
    }
    existing
}

/// Room on the storage the disks go to.
async fn storage(
    api: &dyn ProxmoxApi,
    p: &Preflight,
    template: Option<&Template>,
    existing: &BTreeMap<u32, VmInfo>,
    out: &mut Vec<Finding>,
) {
    let sid = match (&p.storage, template) {
        (Some(sid), _) if p.full_clone => sid.clone(),
        (_, Some(Template { storages, .. })) if !storages.is_empty() => {
            storages.first().cloned().unwrap_or_default()
        }
        _ => {
            out.push(Finding::warn(
                SYSTEM,
                "storage",
                "cannot tell which storage the disks go to (the template's config was not readable)",
                "check free space by hand with `pvesm status` on the node",
            ));
            return;
        }
    };
    let check = format!("storage {sid}");
    let status = match api.storage_status(&p.node, &sid).await {
        Ok(s) => s,
        Err(e) if e.is_forbidden() => {
            out.push(Finding::warn(
                SYSTEM,
                check,
                format!("the token may not read its status: {e}"),
                p.grant(&format!("/storage/{sid}"), "PVEDatastoreUser"),
            ));
            return;
        }
        Err(Error::Api {
            status: 400,
            ref params,
            ..
        }) if params.contains_key("storage") => {
            out.push(Finding::fail(
                SYSTEM,
                check,
                format!("no storage `{sid}` on node {}", p.node),
                "set proxmox.storage to a storage `pvesm status` lists with content `images`",
            ));
            return;
        }
        Err(e) => {
            out.push(Finding::warn(
                SYSTEM,
                check,
                format!("cannot read its status: {e}"),
                format!(
                    "check by hand with `pvesm status --storage {sid}` on {}",
                    p.node
                ),
            ));
            return;
        }
    };
    if status.enabled == Some(false) {
        out.push(Finding::fail(
            SYSTEM,
            check,
            format!("disabled (on node {})", p.node),
            format!(
                "`pvesm set {sid} --disable 0`, or allow it on node {} in its `nodes` list",
                p.node
            ),
        ));
        return;
    }
    if status.active == Some(false) {
        out.push(Finding::fail(
            SYSTEM,
            check,
            format!("not active on node {}: it cannot be reached", p.node),
            format!(
                "`pvesm status --storage {sid}` on {} shows why (a mount, a network storage)",
                p.node
            ),
        ));
        return;
    }
    if !status.content.iter().any(|c| c == "images") {
        out.push(Finding::fail(
            SYSTEM,
            check,
            format!(
                "does not hold VM disks (content: {})",
                status.content.join(",")
            ),
            format!(
                "`pvesm set {sid} --content {},images`, or choose another proxmox.storage",
                status.content.join(",")
            ),
        ));
        return;
    }
    let t = template.map_or((0, 0, 1), |t| (t.boot_bytes, t.other_bytes, t.disks.max(1)));
    let (boot_bytes, other_bytes, disks) = t;
    let mut now = 0u64;
    let mut eventually = 0u64;
    for vm in &p.vms {
        let wanted = u64::from(vm.disk_gib) << 30;
        match existing.get(&vm.vmid) {
            // Only a resize is left: it grows the disk to the wanted size.
            Some(have) => {
                let growth = wanted.saturating_sub(have.maxdisk);
                now += growth;
                eventually += growth;
            }
            None if p.full_clone => {
                let full = wanted.max(boot_bytes) + other_bytes;
                now += full;
                eventually += full;
            }
            None => {
                now += disks * (LINKED_CLONE_GIB_PER_DISK << 30);
                eventually += wanted.max(boot_bytes) + other_bytes;
            }
        }
    }
    let assumed = if p.full_clone {
        "full clones take their whole disks".to_string()
    } else {
        format!(
            "linked clones are thin: {LINKED_CLONE_GIB_PER_DISK} GiB per disk up front, growing to {} as the guests write",
            gib_text(eventually)
        )
    };
    let Some(avail) = status.avail else {
        out.push(Finding::warn(
            SYSTEM,
            check,
            format!(
                "the server reports no free space for it; Castle needs {} ({assumed})",
                gib_text(now)
            ),
            format!("check by hand with `pvesm status --storage {sid}`"),
        ));
        return;
    };
    let detail = format!(
        "{} free of {}; Castle needs {} ({assumed})",
        gib_text(avail),
        status.total.map_or_else(|| "?".to_string(), gib_text),
        gib_text(now)
    );
    out.push(if avail < now {
        Finding::fail(
            SYSTEM,
            check,
            detail,
            format!("free space on {sid} (`pvesm list {sid}` shows what is there), or choose another proxmox.storage"),
        )
    } else if avail < eventually {
        Finding::warn(
            SYSTEM,
            check,
            format!("{detail}: not enough once the disks fill"),
            format!("free space on {sid}, or make the nodes' disk_gib smaller"),
        )
    } else {
        Finding::pass(SYSTEM, check, detail)
    });
}

fn gib_text(bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if (gib - gib.round()).abs() < 0.05 {
        format!("{} GiB", gib.round())
    } else {
        format!("{gib:.1} GiB")
    }
}
