//! Which storage can make which copy of a volume: pve-storage's
//! `volume_has_feature`, per storage plugin, for the two features a clone asks
//! about. qemu-server `clone_vm` (`src/PVE/API2/Qemu.pm` at e6352be6) asks each
//! disk of the source for `clone` when the clone is linked (`full=0`; a template's
//! default) and for `copy` when it is full (a plain VM's default, and always for a
//! cloud-init drive and `tpmstate0`), and dies before forking its worker with
//! `Linked clone feature is not supported for '<volid>' (<drive>)` or `Full clone
//! feature is not supported for ...` when the storage says no.
//!
//! The tables are those of pve-storage `src/PVE/Storage/*Plugin.pm` at 0c56bad
//! (`volume_has_feature` in each); the key is `base` for a template's volume
//! (`base-<vmid>-disk-<n>`), `current` for any other. File-based storages (`dir`,
//! `nfs`, `cifs`, `glusterfs`, `cephfs`) use the base `Plugin.pm` table, which
//! also depends on the volume's format.

/// A feature `volume_has_feature` is asked for by a clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// A linked clone: a thin copy that keeps using the template's base volume.
    Clone,
    /// A full clone: a copy of every block.
    Copy,
}

/// A volume id's name part as pve-storage parses it: whether it is a template's
/// base volume, and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Volume {
    base: bool,
    format: String,
}

/// `local-lvm:base-9000-disk-0`, `local:9000/base-9000-disk-0.qcow2`,
/// `local-lvm:base-9000-disk-0/vm-421-disk-0` (a linked clone: its own name is the
/// last part), `tank:subvol-100-disk-0`.
fn parse(volname: &str) -> Volume {
    let own = volname.rsplit('/').next().unwrap_or(volname);
    let format = match own.rsplit_once('.') {
        Some((_, ext)) if ["qcow2", "raw", "vmdk"].contains(&ext) => ext.to_string(),
        _ if own.starts_with("subvol-") || own.starts_with("basevol-") => "subvol".into(),
        _ => "raw".into(),
    };
    Volume {
        base: own.starts_with("base-") || own.starts_with("basevol-"),
        format,
    }
}

/// Whether a storage of type `kind` has `feature` for the volume `volname` (the
/// part of a volume id after `storage:`), with no snapshot named.
pub fn volume_has_feature(kind: &str, feature: Feature, volname: &str) -> bool {
    let v = parse(volname);
    let key_base = v.base;
    let file_format = ["qcow2", "raw", "vmdk"].contains(&v.format.as_str());
    match (kind, feature) {
        // LvmThinPlugin: clone => { base => 1, snap => 1 }, copy => { base, current, snap }.
        ("lvmthin", Feature::Clone) => key_base,
        ("lvmthin", Feature::Copy) => true,
        // LVMPlugin: no clone (commented out: "fixme: add later ?"); copy for raw
        // and qcow2, base or current.
        ("lvm", Feature::Clone) => false,
        ("lvm", Feature::Copy) => ["raw", "qcow2"].contains(&v.format.as_str()),
        // ZFSPoolPlugin and ZFSPlugin (ZFS over iSCSI): clone => { base => 1 },
        // copy => { base => 1, current => 1 }.
        ("zfspool" | "zfs", Feature::Clone) => key_base,
        ("zfspool" | "zfs", Feature::Copy) => true,
        // RBDPlugin: clone => { base => 1, snap => 1 }, copy => { base, current, snap }.
        ("rbd", Feature::Clone) => key_base,
        ("rbd", Feature::Copy) => true,
        // BTRFSPlugin: clone of a base volume in any of its formats, and of a
        // current raw one; copy of base and current.
        ("btrfs", Feature::Clone) => key_base || v.format == "raw",
        ("btrfs", Feature::Copy) => true,
        // ISCSIPlugin, ISCSIDirectPlugin: copy => { current => 1 } only.
        ("iscsi" | "iscsidirect", Feature::Clone) => false,
        ("iscsi" | "iscsidirect", Feature::Copy) => !key_base,
        // Plugin.pm (file-based storages): clone => { base => qcow2, raw, vmdk },
        // copy => { base and current => qcow2, raw, vmdk }.
        ("dir" | "nfs" | "cifs" | "glusterfs" | "cephfs", Feature::Clone) => {
            key_base && file_format
        }
        ("dir" | "nfs" | "cifs" | "glusterfs" | "cephfs", Feature::Copy) => file_format,
        // PBSPlugin: none; ESXiPlugin: copy only; anything else is not known here.
        ("esxi", Feature::Copy) => true,
        _ => false,
    }
}

/// Whether a storage type can hold a linked clone of a template's volume at all:
/// the answer `castle doctor` and `castle plan` give before anything is cloned.
pub fn links_templates(kind: &str) -> bool {
    let base = if is_file_based(kind) {
        "9000/base-9000-disk-0.qcow2"
    } else {
        "base-9000-disk-0"
    };
    volume_has_feature(kind, Feature::Clone, base)
}

pub(crate) fn is_file_based(kind: &str) -> bool {
    ["dir", "nfs", "cifs", "glusterfs", "cephfs"].contains(&kind)
}

/// The storage id of a volume id (`local-lvm:vm-421-disk-0` -> `local-lvm`), the
/// value of a drive key (`local-lvm:vm-421-disk-0,size=32G`) included.
pub fn storage_of(drive_value: &str) -> Option<(&str, &str)> {
    let volume = drive_value.split(',').next().unwrap_or_default();
    let volume = volume.strip_prefix("file=").unwrap_or(volume);
    volume
        .split_once(':')
        .filter(|(sid, name)| !sid.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_parse_as_pve_storage_reads_them() {
        assert_eq!(
            parse("base-9000-disk-0"),
            Volume {
                base: true,
                format: "raw".into()
            }
        );
        assert!(!parse("base-9000-disk-0/vm-421-disk-0").base);
        assert_eq!(parse("9000/base-9000-disk-0.qcow2").format, "qcow2");
        assert_eq!(parse("subvol-100-disk-0").format, "subvol");
        assert_eq!(
            storage_of("local-lvm:vm-421-disk-0,size=32G"),
            Some(("local-lvm", "vm-421-disk-0"))
        );
        assert_eq!(storage_of("none,media=cdrom"), None);
    }
}
