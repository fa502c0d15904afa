//! The Keelson disk layout and `create()`, which writes it as a sparse image file.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;

use gptman::{GPT, GPTPartitionEntry};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;
use uuid::Uuid;

use crate::size::format_size;
use crate::types::{self, Arch, PartitionType};
use crate::{DiskError, EMPTY_LABEL};

/// Logical sector size of the images we write.
pub const SECTOR_SIZE: u64 = 512;
/// Partition alignment: 1 MiB (2048 sectors), the sgdisk/parted/systemd-repart default.
/// Flatcar's 2 MiB comes from ChromeOS's layout; 1 MiB is already a multiple of every flash
/// erase block and RAID stripe we care about and wastes less.
pub const ALIGNMENT_BYTES: u64 = 1 << 20;
const ALIGN_LBA: u64 = ALIGNMENT_BYTES / SECTOR_SIZE;
/// Sectors a GPT copy takes besides the header: 128 entries of 128 bytes.
const ENTRY_ARRAY_SECTORS: u64 = 128 * 128 / SECTOR_SIZE;

/// Partition number of the ESP.
pub const ESP_PARTITION: u32 = 1;
/// Partition number of the root (state) partition.
pub const ROOT_PARTITION: u32 = 6;

/// One of the two usr slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UsrSlot {
    /// Partitions 2 (usr) and 3 (usr-verity).
    A,
    /// Partitions 4 (usr) and 5 (usr-verity).
    B,
}

impl UsrSlot {
    /// Both slots, A first.
    pub const ALL: [UsrSlot; 2] = [UsrSlot::A, UsrSlot::B];

    /// GPT number of the slot's usr partition.
    pub fn usr_partition(self) -> u32 {
        match self {
            UsrSlot::A => 2,
            UsrSlot::B => 4,
        }
    }

    /// GPT number of the slot's usr-verity partition.
    pub fn verity_partition(self) -> u32 {
        self.usr_partition() + 1
    }

    /// The other slot.
    pub fn other(self) -> UsrSlot {
        match self {
            UsrSlot::A => UsrSlot::B,
            UsrSlot::B => UsrSlot::A,
        }
    }

    /// "A" or "B".
    pub fn name(self) -> &'static str {
        match self {
            UsrSlot::A => "A",
            UsrSlot::B => "B",
        }
    }
}

/// Sizes and identity of a Keelson disk: ESP, usr A, usr-verity A, usr B, usr-verity B, root.
/// All sizes are bytes and must be multiples of [`ALIGNMENT_BYTES`]. Root takes the rest of the
/// disk (at least `root_min_size`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Whole disk image size.
    pub disk_size: u64,
    /// EFI System Partition.
    pub esp_size: u64,
    /// Each usr partition.
    pub usr_size: u64,
    /// Each usr-verity partition; must hold the hash tree of a full usr partition.
    pub usr_verity_size: u64,
    /// Smallest acceptable root partition.
    pub root_min_size: u64,
    /// Architecture of the usr and root partition types.
    pub arch: Arch,
    /// Seed of the disk GUID and partition UUIDs: same seed, same bytes.
    pub seed: String,
    /// Leave root's space free instead of writing its table entry: systemd-repart creates the
    /// partition (number 6, in that space) on the node's first boot.
    pub root_at_first_boot: bool,
}

impl Layout {
    /// Default ESP size.
    pub const DEFAULT_ESP: u64 = 128 << 20;
    /// Default usr size.
    pub const DEFAULT_USR: u64 = 1 << 30;
    /// Default usr-verity size (a 1 GiB usr needs 8 MiB plus the superblock block).
    pub const DEFAULT_USR_VERITY: u64 = 16 << 20;
    /// Default minimum root size (systemd-repart grows it on first boot).
    pub const DEFAULT_ROOT_MIN: u64 = 256 << 20;
    /// Default UUID seed.
    pub const DEFAULT_SEED: &'static str = "keelson";

    /// A layout of `disk_size` bytes with the default partition sizes.
    pub fn new(disk_size: u64) -> Layout {
        Layout {
            disk_size,
            esp_size: Self::DEFAULT_ESP,
            usr_size: Self::DEFAULT_USR,
            usr_verity_size: Self::DEFAULT_USR_VERITY,
            root_min_size: Self::DEFAULT_ROOT_MIN,
            arch: Arch::X86_64,
            seed: Self::DEFAULT_SEED.to_string(),
            root_at_first_boot: false,
        }
    }

    /// Smallest disk that holds this layout.
    pub fn required_disk_size(&self) -> u64 {
        // 1 MiB before the first partition (MBR + primary GPT, aligned), 1 MiB at the end (the
        // backup GPT's 33 sectors, with the root end aligned down).
        ALIGNMENT_BYTES
            .saturating_add(self.esp_size)
            .saturating_add(self.usr_size.saturating_mul(2))
            .saturating_add(self.usr_verity_size.saturating_mul(2))
            .saturating_add(self.root_min_size)
            .saturating_add(ALIGNMENT_BYTES)
    }

    /// The disk GUID this layout writes.
    pub fn disk_guid(&self) -> Uuid {
        derive_uuid(&self.seed, "disk")
    }

    /// Checks the layout and computes every partition's place, label and UUID.
    pub fn plan(&self) -> Result<Vec<PlannedPartition>, DiskError> {
        let fields: [(&'static str, u64); 5] = [
            ("disk_size", self.disk_size),
            ("esp_size", self.esp_size),
            ("usr_size", self.usr_size),
            ("usr_verity_size", self.usr_verity_size),
            ("root_min_size", self.root_min_size),
        ];
        for (field, value) in fields {
            if value == 0 || value % ALIGNMENT_BYTES != 0 {
                return Err(DiskError::Layout {
                    field,
                    value,
                    reason: format!(
                        "must be a non-zero multiple of {ALIGNMENT_BYTES} bytes (1 MiB)"
                    ),
                });
            }
        }
        let tree = verity_tree_bytes(self.usr_size);
        if self.usr_verity_size < tree {
            return Err(DiskError::Layout {
                field: "usr_verity_size",
                value: self.usr_verity_size,
                reason: format!(
                    "too small for the verity tree of a {} usr partition, which needs {tree} bytes",
                    format_size(self.usr_size)
                ),
            });
        }
        let required = self.required_disk_size();
        if self.disk_size < required {
            return Err(DiskError::DiskTooSmall {
                disk_bytes: self.disk_size,
                required_bytes: required,
                detail: format!(
                    "1 MiB GPT + esp {} + 2 x usr {} + 2 x usr-verity {} + root at least {} + 1 MiB backup GPT",
                    format_size(self.esp_size),
                    format_size(self.usr_size),
                    format_size(self.usr_verity_size),
                    format_size(self.root_min_size)
                ),
            });
        }
        let sectors = self.disk_size / SECTOR_SIZE;
        let last_usable = sectors - 1 - ENTRY_ARRAY_SECTORS - 1;
        let usr = self.arch.usr();
        let verity = self.arch.usr_verity();
        let parts: [(u32, PartitionType, &str, &str, u64); 5] = [
            (ESP_PARTITION, types::ESP, "esp", "esp", self.esp_size),
            (2, usr, EMPTY_LABEL, "usr-a", self.usr_size),
            (3, verity, EMPTY_LABEL, "usr-verity-a", self.usr_verity_size),
            (4, usr, EMPTY_LABEL, "usr-b", self.usr_size),
            (5, verity, EMPTY_LABEL, "usr-verity-b", self.usr_verity_size),
        ];
        let mut plan = Vec::with_capacity(6);
        let mut next = ALIGN_LBA;
        for (number, kind, label, purpose, bytes) in parts {
            let first_lba = next;
            let last_lba = first_lba + bytes / SECTOR_SIZE - 1;
            plan.push(PlannedPartition {
                number,
                kind,
                label: label.to_string(),
                uuid: derive_uuid(&self.seed, purpose),
                first_lba,
                last_lba,
            });
            next = last_lba + 1;
        }
        if self.root_at_first_boot {
            return Ok(plan);
        }
        // Root ends on an alignment boundary so its size is whole MiB.
        let root_end = (last_usable + 1) / ALIGN_LBA * ALIGN_LBA - 1;
        plan.push(PlannedPartition {
            number: ROOT_PARTITION,
            kind: self.arch.root(),
            label: "root".to_string(),
            uuid: derive_uuid(&self.seed, "root"),
            first_lba: next,
            last_lba: root_end,
        });
        Ok(plan)
    }
}

/// One partition of a planned layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPartition {
    /// 1-based GPT number.
    pub number: u32,
    /// Partition type.
    pub kind: PartitionType,
    /// GPT label.
    pub label: String,
    /// Partition UUID.
    pub uuid: Uuid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
}

/// Bytes a dm-verity hash partition needs for `data_bytes` of data: SHA-256, 4 KiB data and
/// hash blocks, one superblock block (cryptsetup's `veritysetup format` defaults).
pub fn verity_tree_bytes(data_bytes: u64) -> u64 {
    const BLOCK: u64 = 4096;
    const PER_BLOCK: u64 = BLOCK / 32;
    let mut blocks = data_bytes.div_ceil(BLOCK);
    let mut hash_blocks = 1; // superblock
    while blocks > 1 {
        blocks = blocks.div_ceil(PER_BLOCK);
        hash_blocks += blocks;
    }
    hash_blocks * BLOCK
}

/// A deterministic UUID: the first 16 bytes of
/// `SHA-256("keelson-disk" NUL seed NUL purpose)` with the v4 version and RFC 4122 variant bits
/// set (as systemd's `id128_make_v4_uuid` does for hashed ids), so images are reproducible.
pub fn derive_uuid(seed: &str, purpose: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"keelson-disk\0");
    h.update(seed.as_bytes());
    h.update(b"\0");
    h.update(purpose.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A deterministic UUID for the file systems inside an image (the erofs `/usr`, the verity
/// superblock, the ESP volume ID): the first 16 bytes of `SHA-256("keelson:" purpose ":" seed)`
/// with the v4 version and RFC 4122 variant bits set.
///
/// A separate formula from [`derive_uuid`] (which names partitions) on purpose: the erofs UUID
/// is part of `/usr` and so of its root hash, and a reproducible build must keep giving the
/// root hashes it gave before.
pub fn derive_fs_uuid(seed: &str, purpose: &str) -> Uuid {
    let digest = Sha256::digest(format!("keelson:{purpose}:{seed}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Writes a new Keelson disk image at `path` (sparse; protective MBR, primary and backup GPT).
/// Any existing file at `path` is replaced atomically; on error nothing is left behind.
pub fn create(path: &Path, layout: &Layout) -> Result<(), DiskError> {
    let plan = layout.plan()?;
    create_from_plan(path, layout.disk_size, layout.disk_guid(), &plan)
}

/// Writes a new GPT disk image of `disk_size` bytes at `path` with exactly the partitions of
/// `plan` (for images that are not a Keelson disk, such as a system extension's DDI). The
/// caller places the partitions; each must lie inside the usable area. Any existing file at
/// `path` is replaced atomically; on error nothing is left behind.
pub fn create_from_plan(
    path: &Path,
    disk_size: u64,
    disk_guid: Uuid,
    plan: &[PlannedPartition],
) -> Result<(), DiskError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |action: &str| {
        let action = action.to_string();
        let path = path.to_path_buf();
        move |source| DiskError::Io {
            action,
            path,
            source,
        }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".keelson-disk-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("creating a temporary file next to"))?;
    write_layout(tmp.as_file_mut(), disk_size, disk_guid, plan).map_err(|e| match e {
        WriteError::Io(source) => DiskError::Io {
            action: "writing the partition table of".into(),
            path: path.to_path_buf(),
            source,
        },
        WriteError::Gpt(source) => DiskError::Gpt {
            action: "writing the partition table of",
            path: path.to_path_buf(),
            source,
        },
    })?;
    tmp.as_file().sync_all().map_err(io("syncing"))?;
    tmp.persist(path).map_err(|e| DiskError::Io {
        action: "renaming the temporary file to".into(),
        path: path.to_path_buf(),
        source: e.error,
    })?;
    info!(path = %path.display(), size = disk_size, "created disk image");
    Ok(())
}

enum WriteError {
    Io(std::io::Error),
    Gpt(gptman::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl From<gptman::Error> for WriteError {
    fn from(e: gptman::Error) -> Self {
        WriteError::Gpt(e)
    }
}

fn write_layout(
    file: &mut File,
    disk_size: u64,
    disk_guid: Uuid,
    plan: &[PlannedPartition],
) -> Result<(), WriteError> {
    file.set_len(disk_size)?;
    let mut gpt = GPT::new_from(file, SECTOR_SIZE, disk_guid.to_bytes_le())?;
    gpt.align = ALIGN_LBA;
    for p in plan {
        gpt[p.number] = GPTPartitionEntry {
            partition_type_guid: p.kind.guid.to_bytes_le(),
            unique_partition_guid: p.uuid.to_bytes_le(),
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: 0,
            partition_name: p.label.as_str().into(),
        };
    }
    GPT::write_protective_mbr_into(file, SECTOR_SIZE)?;
    gpt.write_into(file)?;
    file.rewind()?;
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fs_uuids_are_pinned() {
        // The image builder's erofs, verity and ESP ids for `keelson:1.2.0`: a change here
        // changes every /usr root hash a reproducible build gives.
        let seed = "keelson:1.2.0";
        assert_eq!(
            derive_fs_uuid(seed, "usr-erofs").to_string(),
            "82f77887-d6d2-470f-9105-d74a41acef21"
        );
        assert_eq!(
            derive_fs_uuid(seed, "usr-verity").to_string(),
            "eadcd283-cb91-481e-87f1-b7004ffa33a8"
        );
        assert_eq!(
            derive_fs_uuid(seed, "esp").to_string(),
            "3aacea2f-09a0-4615-8084-cd6ffad365b1"
        );
        assert_ne!(derive_fs_uuid(seed, "esp"), derive_uuid(seed, "esp"));
    }

    #[test]
    fn verity_tree_sizes_match_image_format_vectors() {
        // image-format.md section 3: 129 zero blocks -> 12288-byte tree (without superblock);
        // 16384 blocks -> 129 hash blocks; one block -> empty tree.
        assert_eq!(verity_tree_bytes(129 * 4096), 12288 + 4096);
        assert_eq!(verity_tree_bytes(16384 * 4096), 129 * 4096 + 4096);
        assert_eq!(verity_tree_bytes(4096), 4096);
        // Flatcar's 260094-block /usr: 2049 hash blocks + superblock.
        assert_eq!(verity_tree_bytes(260094 * 4096), 2050 * 4096);
    }

    #[test]
    fn plan_is_aligned_ordered_and_fills_the_disk() {
        let layout = Layout::new(4 << 30);
        let plan = layout.plan().unwrap();
        assert_eq!(plan.len(), 6);
        let numbers: Vec<u32> = plan.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
        for w in plan.windows(2) {
            assert_eq!(w[0].last_lba + 1, w[1].first_lba);
        }
        for p in &plan {
            assert_eq!(p.first_lba % ALIGN_LBA, 0, "partition {}", p.number);
            assert_eq!((p.last_lba + 1) % ALIGN_LBA, 0, "partition {}", p.number);
        }
        assert_eq!(plan[0].first_lba, 2048);
        assert_eq!(plan[5].last_lba, (4u64 << 30) / 512 - 2048 - 1);
        assert_eq!(plan[1].label, "_empty");
        assert_eq!(plan[1].kind, types::USR_X86_64);
        assert_eq!(plan[2].kind, types::USR_VERITY_X86_64);
        assert_eq!(plan[5].kind, types::ROOT_X86_64);
    }

    #[test]
    fn root_at_first_boot_leaves_its_space_free() {
        let mut layout = Layout::new(4 << 30);
        let full = layout.plan().unwrap();
        layout.root_at_first_boot = true;
        let plan = layout.plan().unwrap();
        assert_eq!(plan[..], full[..5]);
        // The size check still counts root's minimum.
        layout.disk_size = layout.required_disk_size() - ALIGNMENT_BYTES;
        assert!(layout.plan().is_err());
    }

    #[test]
    fn uuids_are_deterministic_distinct_and_seeded() {
        let a = Layout::new(4 << 30).plan().unwrap();
        let b = Layout::new(4 << 30).plan().unwrap();
        assert_eq!(a, b);
        let mut other = Layout::new(4 << 30);
        other.seed = "other".into();
        let c = other.plan().unwrap();
        assert_ne!(a[0].uuid, c[0].uuid);
        let mut uuids: Vec<Uuid> = a.iter().map(|p| p.uuid).collect();
        uuids.push(Layout::new(1).disk_guid());
        uuids.sort();
        uuids.dedup();
        assert_eq!(uuids.len(), 7);
        assert_eq!(a[0].uuid.get_version_num(), 4);
        // Pinned: changing the derivation would change every image built from the same inputs.
        assert_eq!(
            Layout::new(1).disk_guid().to_string(),
            "044d040a-99bd-424e-aee0-585ebc49ecb5"
        );
    }

    #[test]
    fn layout_errors_name_the_field_and_sizes() {
        let mut l = Layout::new(4 << 30);
        l.esp_size = 1000;
        let e = l.plan().unwrap_err().to_string();
        assert!(e.contains("esp_size = 1000"), "{e}");

        let mut l = Layout::new(4 << 30);
        l.usr_verity_size = 1 << 20;
        let e = l.plan().unwrap_err().to_string();
        assert!(
            e.contains("usr_verity_size") && e.contains("8462336"),
            "{e}"
        );

        let l = Layout::new(1 << 30);
        let e = l.plan().unwrap_err().to_string();
        assert!(e.contains("1073741824 bytes"), "{e}");
        assert!(e.contains("needs 2585788416 bytes"), "{e}");
        assert!(e.contains("usr 1.0 GiB"), "{e}");
    }
}
