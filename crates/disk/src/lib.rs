//! GPT disk images for Keelson: DPS partition types, A/B usr slots, ChromeOS/Flatcar priority bits.
//!
//! Everything works on plain image files (or block devices opened as files): no root, no loop
//! devices. The image builder's whole API is three calls:
//!
//! ```no_run
//! # fn main() -> Result<(), keelson_disk::DiskError> {
//! use keelson_disk::{Disk, Layout, UsrSlot, ESP_PARTITION};
//! let path = std::path::Path::new("disk.img");
//! keelson_disk::create(path, &Layout::new(4 << 30))?;
//! let mut disk = Disk::open_rw(path)?;
//! disk.write_image_file(ESP_PARTITION, "esp.vfat".as_ref())?;
//! let root_hash = [0x11u8; 32];
//! disk.install_usr_slot(UsrSlot::A, "1.2.0", &root_hash, "usr.erofs".as_ref(), "usr.verity".as_ref())?;
//! disk.commit()?;
//! # Ok(()) }
//! ```

// Every public item carries a one-line doc; keep the compiler checking it.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod attrs;
mod disk;
mod error;
pub mod gptprio;
mod layout;
mod report;
mod size;
pub mod types;

pub use attrs::PrioBits;
pub use disk::{Disk, GptCopy, PartitionInfo};
pub use error::DiskError;
pub use layout::{
    ALIGNMENT_BYTES, ESP_PARTITION, Layout, PlannedPartition, ROOT_PARTITION, SECTOR_SIZE, UsrSlot,
    create, create_from_plan, derive_fs_uuid, derive_uuid, verity_tree_bytes,
};
pub use report::{DiskReport, FlatcarSlot, KeelsonSlot, SlotState};
pub use size::{format_size, parse_size};
pub use types::{Arch, PartitionType};

pub use uuid::Uuid;

/// Label of a usr or usr-verity partition that holds no version (systemd-sysupdate's convention).
pub const EMPTY_LABEL: &str = "_empty";
/// Prefix of versioned usr labels: `keelson_1.2.0` (and `keelson_1.2.0_verity` for the tree).
pub const LABEL_PREFIX: &str = "keelson_";
/// Suffix of versioned usr-verity labels.
pub const VERITY_LABEL_SUFFIX: &str = "_verity";

/// Label of the usr partition that holds `version`.
pub fn usr_label(version: &str) -> String {
    format!("{LABEL_PREFIX}{version}")
}

/// Label of the usr-verity partition that holds the tree for `version`.
pub fn usr_verity_label(version: &str) -> String {
    format!("{LABEL_PREFIX}{version}{VERITY_LABEL_SUFFIX}")
}

/// The version carried by a usr or usr-verity label, if it is a Keelson versioned label.
pub fn version_from_label(label: &str) -> Option<&str> {
    let v = label.strip_prefix(LABEL_PREFIX)?;
    let v = v.strip_suffix(VERITY_LABEL_SUFFIX).unwrap_or(v);
    (!v.is_empty()).then_some(v)
}

/// Partition UUIDs for a dm-verity root hash, as systemd does: the usr partition's UUID is the
/// first 16 bytes of the hash and the usr-verity partition's UUID the last 16, taken verbatim
/// (no v4 version/variant bits), in the byte order of the UUID's text form.
///
/// systemd's veritysetup generator (`determine_device()` in
/// `src/veritysetup/veritysetup-generator.c`, which turns `usrhash=` into
/// `/dev/disk/by-partuuid/<uuid>`) and `dissect_image()` (`src/shared/dissect-image.c`) both
/// `memcpy` those bytes into an `sd_id128_t` and format or compare it as a UUID string; so the
/// text form of the UUID is the hex of the hash bytes, and on disk the GPT stores that UUID in
/// its usual mixed-endian encoding. For a SHA-256 hash the two UUIDs together are the whole hash.
pub fn uuids_from_root_hash(root_hash: &[u8]) -> Result<(Uuid, Uuid), DiskError> {
    let (Some(first), Some(last)) = (root_hash.first_chunk::<16>(), root_hash.last_chunk::<16>())
    else {
        return Err(DiskError::RootHashTooShort {
            len: root_hash.len(),
        });
    };
    let (usr, verity) = (Uuid::from_bytes(*first), Uuid::from_bytes(*last));
    if usr.is_nil() || verity.is_nil() {
        // systemd refuses a null half (-EINVAL), so such a hash could never be found.
        return Err(DiskError::RootHashNullHalf {
            hash: hex(root_hash),
        });
    }
    Ok((usr, verity))
}

/// Lowercase hex of some bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uuids_are_the_hash_halves_in_text_order() {
        // A root hash from image-format.md section 3 (8 MiB of zeros, 4096-byte blocks).
        let hash: Vec<u8> = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"e522df0f97da4febb882ac40f30b37dc0b444bf6df418929463fa25280f09d5c"
                        [i * 2..i * 2 + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        let (usr, verity) = uuids_from_root_hash(&hash).unwrap();
        assert_eq!(usr.to_string(), "e522df0f-97da-4feb-b882-ac40f30b37dc");
        assert_eq!(verity.to_string(), "0b444bf6-df41-8929-463f-a25280f09d5c");
        // On disk (GPT mixed-endian) the first three groups are byte-swapped.
        assert_eq!(
            usr.to_bytes_le()[..4],
            [0x0f, 0xdf, 0x22, 0xe5],
            "GPT stores time_low little-endian"
        );
    }

    #[test]
    fn sha1_hash_halves_overlap() {
        let hash: Vec<u8> = (1..=20).collect();
        let (usr, verity) = uuids_from_root_hash(&hash).unwrap();
        assert_eq!(usr.as_bytes()[0], 1);
        assert_eq!(verity.as_bytes()[0], 5);
        assert_eq!(verity.as_bytes()[15], 20);
    }

    #[test]
    fn bad_hashes_are_refused_with_the_value() {
        let e = uuids_from_root_hash(&[1u8; 15]).unwrap_err();
        assert!(e.to_string().contains("15 bytes"), "{e}");
        let mut h = [0u8; 32];
        h[31] = 1;
        let e = uuids_from_root_hash(&h).unwrap_err();
        assert!(e.to_string().contains("0000000000"), "{e}");
    }

    #[test]
    fn labels_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("keelson_1.2.0", Some("1.2.0")),
            ("keelson_1.2.0_verity", Some("1.2.0")),
            ("keelson_", None),
            ("_empty", None),
            ("USR-A", None),
            ("keelson_2026.11.24+git", Some("2026.11.24+git")),
        ];
        for (label, version) in cases {
            assert_eq!(version_from_label(label), *version, "{label}");
        }
        assert_eq!(usr_label("1.2.0"), "keelson_1.2.0");
        assert_eq!(usr_verity_label("1.2.0"), "keelson_1.2.0_verity");
    }
}
