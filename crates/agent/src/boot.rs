//! What the node is running: os-release, the `usrhash=` on the kernel command line, the disk
//! and the usr slot it came from, and the versions in both slots.

use std::path::{Path, PathBuf};

use keelson_disk::{Disk, UsrSlot};
use serde::Serialize;

use crate::paths::Paths;

/// Finding the running system failed; names the file, device or value.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A required key is missing from a file.
    #[error("{path}: no {key}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key (`VERSION_ID`, `usrhash=`).
        key: &'static str,
    },
    /// `usrhash=` is not hex.
    #[error("{path}: usrhash={value:?} is not a hex root hash")]
    BadUsrhash {
        /// The command line file.
        path: PathBuf,
        /// The value.
        value: String,
    },
    /// The disk could not be read.
    #[error(transparent)]
    Disk(#[from] keelson_disk::DiskError),
    /// No usr slot of the disk carries the running root hash.
    #[error("{disk}: no usr slot has the partition UUID {uuid} of the running usrhash")]
    NoRunningSlot {
        /// The disk.
        disk: PathBuf,
        /// The UUID looked for.
        uuid: String,
    },
    /// The disk holding the running usr partition was not found.
    #[error("cannot find the disk of usr partition {uuid}: {reason}")]
    NoDisk {
        /// The partition UUID.
        uuid: String,
        /// What failed.
        reason: String,
    },
}

/// The keys of os-release the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    /// `ID`.
    pub id: String,
    /// `VERSION_ID`: the running version.
    pub version_id: String,
}

/// Reads `ID` and `VERSION_ID` from an os-release file.
pub fn read_os_release(path: &Path) -> Result<OsRelease, BootError> {
    let text = std::fs::read_to_string(path).map_err(|source| BootError::Io {
        path: path.to_owned(),
        source,
    })?;
    let get = |key: &'static str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\'').to_owned())
            .filter(|v| !v.is_empty())
            .ok_or(BootError::Missing {
                path: path.to_owned(),
                key,
            })
    };
    Ok(OsRelease {
        id: get("ID")?,
        version_id: get("VERSION_ID")?,
    })
}

/// The value of `usrhash=` on a kernel command line (the last one wins, as in the kernel).
pub fn usrhash_from_cmdline(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("usrhash="))
        .next_back()
}

/// The running usr root hash, as bytes, from `/proc/cmdline`.
pub fn running_root_hash(paths: &Paths) -> Result<Vec<u8>, BootError> {
    let path = paths.cmdline();
    let text = std::fs::read_to_string(&path).map_err(|source| BootError::Io {
        path: path.clone(),
        source,
    })?;
    let value = usrhash_from_cmdline(&text).ok_or(BootError::Missing {
        path: path.clone(),
        key: "usrhash=",
    })?;
    hex::decode(value).map_err(|_| BootError::BadUsrhash {
        path,
        value: value.to_owned(),
    })
}

/// systemd's architecture name of this build (`x86-64`, `arm64`).
pub fn systemd_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// update_engine's `board` for this architecture.
pub fn omaha_board() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64-usr",
        _ => "amd64-usr",
    }
}

/// One usr slot as the partition table shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    /// A or B.
    pub slot: UsrSlot,
    /// The version its label names (`None` when `_empty` or unlabelled).
    pub version: Option<String>,
    /// Byte offset of the usr partition on the disk.
    pub usr_offset: u64,
    /// Size of the usr partition.
    pub usr_size: u64,
    /// Byte offset of the usr-verity partition.
    pub verity_offset: u64,
    /// Size of the usr-verity partition.
    pub verity_size: u64,
}

/// The disk, the slot /usr came from, and both slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// The disk device (or image file).
    pub disk: PathBuf,
    /// The slot the running /usr came from (never written).
    pub running: UsrSlot,
    /// Both slots, A then B.
    pub slots: Vec<SlotView>,
}

impl Layout {
    /// The slot that may be written.
    pub fn inactive(&self) -> UsrSlot {
        self.running.other()
    }

    /// The view of one slot.
    pub fn slot(&self, slot: UsrSlot) -> Option<&SlotView> {
        self.slots.iter().find(|s| s.slot == slot)
    }
}

/// Reads the partition table and finds the running slot from the root hash.
pub fn layout(paths: &Paths, root_hash: &[u8]) -> Result<Layout, BootError> {
    let (usr_uuid, _) = keelson_disk::uuids_from_root_hash(root_hash)?;
    let disk_path = match &paths.disk {
        Some(d) => d.clone(),
        None => find_disk(paths, &usr_uuid.to_string())?,
    };
    let disk = Disk::open(&disk_path)?;
    let mut slots = Vec::new();
    let mut running = None;
    for slot in UsrSlot::ALL {
        let usr = disk.partition(slot.usr_partition())?;
        let verity = disk.partition(slot.verity_partition())?;
        if usr.uuid == usr_uuid {
            running = Some(slot);
        }
        slots.push(SlotView {
            slot,
            version: keelson_disk::version_from_label(&usr.label).map(str::to_owned),
            usr_offset: usr.first_lba * keelson_disk::SECTOR_SIZE,
            usr_size: usr.size_bytes,
            verity_offset: verity.first_lba * keelson_disk::SECTOR_SIZE,
            verity_size: verity.size_bytes,
        });
    }
    let running = running.ok_or_else(|| BootError::NoRunningSlot {
        disk: disk_path.clone(),
        uuid: usr_uuid.to_string(),
    })?;
    Ok(Layout {
        disk: disk_path,
        running,
        slots,
    })
}

/// The whole disk holding partition `uuid`: `/dev/disk/by-partuuid/<uuid>` -> `/dev/vda2` ->
/// `/sys/class/block/vda2/..` -> `/dev/vda`.
pub fn find_disk(paths: &Paths, uuid: &str) -> Result<PathBuf, BootError> {
    let no = |reason: String| BootError::NoDisk {
        uuid: uuid.to_owned(),
        reason,
    };
    let link = paths.by_partuuid().join(uuid);
    let part = std::fs::canonicalize(&link).map_err(|e| no(format!("{}: {e}", link.display())))?;
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| no(format!("{} has no name", part.display())))?;
    let sys = paths.sys_class_block().join(name);
    let sys = std::fs::canonicalize(&sys).map_err(|e| no(format!("{}: {e}", sys.display())))?;
    let parent = sys
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| no(format!("{} has no parent device", sys.display())))?;
    Ok(paths.dev().join(parent))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cmdline_and_os_release() {
        assert_eq!(
            usrhash_from_cmdline("console=ttyS0 usrhash=ab12 root=PARTLABEL=root usrhash=cd34\n"),
            Some("cd34")
        );
        assert_eq!(usrhash_from_cmdline("console=ttyS0"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("os-release");
        std::fs::write(&p, "NAME=\"Keelson\"\nID=keelson\nVERSION_ID=\"1.2.0\"\n").unwrap();
        let os = read_os_release(&p).unwrap();
        assert_eq!(
            (os.id.as_str(), os.version_id.as_str()),
            ("keelson", "1.2.0")
        );
        std::fs::write(&p, "ID=keelson\n").unwrap();
        let e = read_os_release(&p).unwrap_err().to_string();
        assert!(e.contains("VERSION_ID") && e.contains("os-release"), "{e}");
    }

    #[test]
    fn disk_of_a_partition_through_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let r = dir.path();
        std::fs::create_dir_all(r.join("dev/disk/by-partuuid")).unwrap();
        std::fs::create_dir_all(r.join("sys/devices/pci0/virtio1/block/vda/vda2")).unwrap();
        std::fs::create_dir_all(r.join("sys/class/block")).unwrap();
        std::fs::write(r.join("dev/vda2"), b"").unwrap();
        std::os::unix::fs::symlink("../../vda2", r.join("dev/disk/by-partuuid/u-1")).unwrap();
        std::os::unix::fs::symlink(
            r.join("sys/devices/pci0/virtio1/block/vda/vda2"),
            r.join("sys/class/block/vda2"),
        )
        .unwrap();
        assert_eq!(find_disk(&paths, "u-1").unwrap(), r.join("dev/vda"));
        let e = find_disk(&paths, "u-2").unwrap_err().to_string();
        assert!(e.contains("u-2"), "{e}");
    }
}
