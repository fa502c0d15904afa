//! Partition type GUIDs: the Discoverable Partitions Specification (DPS) types Keelson writes and
//! the Flatcar/CoreOS types it reads.

use serde::Serialize;
use uuid::{Uuid, uuid};

/// A GPT partition type: its GUID and a short stable name (used in `keelson disk show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PartitionType {
    /// Short name, stable across releases (for example `usr-x86-64`).
    pub name: &'static str,
    /// The type GUID as written in the GPT entry.
    pub guid: Uuid,
}

const fn t(name: &'static str, guid: Uuid) -> PartitionType {
    PartitionType { name, guid }
}

/// EFI System Partition.
pub const ESP: PartitionType = t("esp", uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"));
/// Extended Boot Loader Partition (XBOOTLDR).
pub const XBOOTLDR: PartitionType = t("xbootldr", uuid!("bc13c2ff-59e6-4262-a352-b275fd6f7172"));
/// BIOS boot partition (GRUB core.img; Flatcar partition 2).
pub const BIOS_BOOT: PartitionType = t("bios-boot", uuid!("21686148-6449-6e6f-744e-656564454649"));
/// Generic Linux data (Flatcar's OEM partition uses it).
pub const LINUX_DATA: PartitionType =
    t("linux-data", uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4"));

/// DPS root partition, x86-64.
pub const ROOT_X86_64: PartitionType =
    t("root-x86-64", uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"));
/// DPS root-verity partition, x86-64.
pub const ROOT_VERITY_X86_64: PartitionType = t(
    "root-verity-x86-64",
    uuid!("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"),
);
/// DPS root-verity-sig partition, x86-64.
pub const ROOT_VERITY_SIG_X86_64: PartitionType = t(
    "root-verity-sig-x86-64",
    uuid!("41092b05-9fc8-4523-994f-2def0408b176"),
);
/// DPS usr partition, x86-64.
pub const USR_X86_64: PartitionType =
    t("usr-x86-64", uuid!("8484680c-9521-48c6-9c11-b0720656f69e"));
/// DPS usr-verity partition, x86-64.
pub const USR_VERITY_X86_64: PartitionType = t(
    "usr-verity-x86-64",
    uuid!("77ff5f63-e7b6-4633-acf4-1565b864c0e6"),
);
/// DPS usr-verity-sig partition, x86-64.
pub const USR_VERITY_SIG_X86_64: PartitionType = t(
    "usr-verity-sig-x86-64",
    uuid!("e7bb33fb-06cf-4e81-8273-e543b413e2e2"),
);

/// DPS root partition, arm64.
pub const ROOT_ARM64: PartitionType =
    t("root-arm64", uuid!("b921b045-1df0-41c3-af44-4c6f280d3fae"));
/// DPS root-verity partition, arm64.
pub const ROOT_VERITY_ARM64: PartitionType = t(
    "root-verity-arm64",
    uuid!("df3300ce-d69f-4c92-978c-9bfb0f38d820"),
);
/// DPS root-verity-sig partition, arm64.
pub const ROOT_VERITY_SIG_ARM64: PartitionType = t(
    "root-verity-sig-arm64",
    uuid!("6db69de6-29f4-4758-a7a5-962190f00ce3"),
);
/// DPS usr partition, arm64.
pub const USR_ARM64: PartitionType = t("usr-arm64", uuid!("b0e01050-ee5f-4390-949a-9101b17104e9"));
/// DPS usr-verity partition, arm64.
pub const USR_VERITY_ARM64: PartitionType = t(
    "usr-verity-arm64",
    uuid!("6e11a4e7-fbca-4ded-b9e9-e1a512bb664e"),
);
/// DPS usr-verity-sig partition, arm64.
pub const USR_VERITY_SIG_ARM64: PartitionType = t(
    "usr-verity-sig-arm64",
    uuid!("c23ce4ff-44bd-4b00-b2d4-b41b3419e02a"),
);

/// DPS /var partition (its UUID is normally machine-bound; listed for reading only).
pub const VAR: PartitionType = t("var", uuid!("4d21b016-b534-45c2-a9fb-5c16e091fd2d"));
/// DPS /home partition.
pub const HOME: PartitionType = t("home", uuid!("933ac7e1-2eb4-4f13-b844-0e14e2aef915"));
/// DPS swap partition.
pub const SWAP: PartitionType = t("swap", uuid!("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"));

/// Flatcar/CoreOS USR-A/USR-B ("coreos-usr"); GRUB's gptprio matches this type on every arch.
pub const COREOS_USR: PartitionType =
    t("coreos-usr", uuid!("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"));
/// Flatcar/CoreOS ROOT that grows to the end of the disk ("coreos-resize").
pub const COREOS_RESIZE: PartitionType = t(
    "coreos-resize",
    uuid!("3884dd41-8582-4404-b9a8-e9b84f2df50e"),
);
/// Flatcar/CoreOS reserved (OEM-CONFIG).
pub const COREOS_RESERVED: PartitionType = t(
    "coreos-reserved",
    uuid!("c95dc21a-df0e-4340-8d7b-26cbfa9a03e0"),
);
/// Flatcar/CoreOS root on RAID.
pub const COREOS_ROOT_RAID: PartitionType = t(
    "coreos-root-raid",
    uuid!("be9067b9-ea49-4f15-b4f6-f36f8c9e1818"),
);

/// Every type this crate knows by name, for lookups.
pub const ALL: &[PartitionType] = &[
    ESP,
    XBOOTLDR,
    BIOS_BOOT,
    LINUX_DATA,
    ROOT_X86_64,
    ROOT_VERITY_X86_64,
    ROOT_VERITY_SIG_X86_64,
    USR_X86_64,
    USR_VERITY_X86_64,
    USR_VERITY_SIG_X86_64,
    ROOT_ARM64,
    ROOT_VERITY_ARM64,
    ROOT_VERITY_SIG_ARM64,
    USR_ARM64,
    USR_VERITY_ARM64,
    USR_VERITY_SIG_ARM64,
    VAR,
    HOME,
    SWAP,
    COREOS_USR,
    COREOS_RESIZE,
    COREOS_RESERVED,
    COREOS_ROOT_RAID,
];

/// Looks a type GUID up among the known types.
pub fn by_guid(guid: Uuid) -> Option<PartitionType> {
    ALL.iter().copied().find(|t| t.guid == guid)
}

/// Looks a type up by its short name (as printed by `keelson disk show`).
pub fn by_name(name: &str) -> Option<PartitionType> {
    ALL.iter().copied().find(|t| t.name == name)
}

/// Is this one of the DPS usr types (any architecture)?
pub fn is_dps_usr(guid: Uuid) -> bool {
    guid == USR_X86_64.guid || guid == USR_ARM64.guid
}

/// Is this one of the DPS usr-verity types (any architecture)?
pub fn is_dps_usr_verity(guid: Uuid) -> bool {
    guid == USR_VERITY_X86_64.guid || guid == USR_VERITY_ARM64.guid
}

/// CPU architecture of the usr/root partition types in a Keelson layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// x86-64 (amd64).
    #[default]
    X86_64,
    /// arm64 (aarch64).
    Arm64,
}

impl Arch {
    /// DPS usr type for this architecture.
    pub fn usr(self) -> PartitionType {
        match self {
            Arch::X86_64 => USR_X86_64,
            Arch::Arm64 => USR_ARM64,
        }
    }

    /// DPS usr-verity type for this architecture.
    pub fn usr_verity(self) -> PartitionType {
        match self {
            Arch::X86_64 => USR_VERITY_X86_64,
            Arch::Arm64 => USR_VERITY_ARM64,
        }
    }

    /// DPS root type for this architecture.
    pub fn root(self) -> PartitionType {
        match self {
            Arch::X86_64 => ROOT_X86_64,
            Arch::Arm64 => ROOT_ARM64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_guids_are_unique() {
        let names: HashSet<_> = ALL.iter().map(|t| t.name).collect();
        let guids: HashSet<_> = ALL.iter().map(|t| t.guid).collect();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(guids.len(), ALL.len());
    }

    #[test]
    fn lookups_round_trip() {
        for t in ALL {
            assert_eq!(by_guid(t.guid), Some(*t));
            assert_eq!(by_name(t.name), Some(*t));
        }
        assert_eq!(by_guid(Uuid::nil()), None);
    }

    #[test]
    fn arch_types_are_the_dps_ones() {
        assert!(is_dps_usr(Arch::Arm64.usr().guid));
        assert!(is_dps_usr_verity(Arch::X86_64.usr_verity().guid));
        assert!(!is_dps_usr(COREOS_USR.guid));
        assert_eq!(
            Arch::X86_64.root().guid.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
    }
}
