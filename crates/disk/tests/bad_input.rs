//! Bad disks and bad requests: each gets an error naming the value, nothing panics, and nothing
//! is half-written.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use keelson_disk::{Disk, DiskError, GptCopy, Layout, UsrSlot, create};

const MIB: u64 = 1 << 20;

fn small_layout() -> Layout {
    let mut l = Layout::new(64 * MIB);
    l.esp_size = 8 * MIB;
    l.usr_size = 16 * MIB;
    l.usr_verity_size = MIB;
    l.root_min_size = 4 * MIB;
    l
}

fn disk(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    create(&path, &small_layout()).unwrap();
    path
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn truncated_image_names_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(40 * MIB).unwrap();
    let e = Disk::open(&path).unwrap_err();
    assert!(
        matches!(e, DiskError::Truncated { actual, expected, .. } if actual == 40 * MIB && expected == 64 * MIB),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("disk.img") && msg.contains("41943040") && msg.contains("67108864"),
        "{msg}"
    );
}

#[test]
fn tiny_and_empty_files_are_too_small() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 100, 4096] {
        let path = dir.path().join(format!("tiny{len}.img"));
        fs::write(&path, vec![0u8; len]).unwrap();
        let e = Disk::open(&path).unwrap_err();
        assert!(
            matches!(e, DiskError::TooSmallForGpt { size, .. } if size == len as u64),
            "{e}"
        );
    }
}

#[test]
fn not_a_gpt_disk() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros.img");
    fs::write(&zeros, vec![0u8; MIB as usize]).unwrap();
    let text = dir.path().join("text.img");
    fs::write(&text, "hello ".repeat(100_000)).unwrap();
    for path in [zeros, text] {
        let e = Disk::open(&path).unwrap_err();
        assert!(matches!(e, DiskError::NotGpt { .. }), "{e}");
        assert!(e.to_string().contains("is not a GPT disk"), "{e}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = Disk::open(Path::new("/nonexistent/keelson.img")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/keelson.img"), "{e}");
}

#[test]
fn corrupt_primary_header_falls_back_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let expected = Disk::open(&path).unwrap().partitions();
    // Flip a byte inside the header (the disk GUID): its CRC no longer matches.
    overwrite(&path, 512 + 56, &[0xff]);
    let disk = Disk::open(&path).unwrap();
    assert_eq!(disk.read_from(), GptCopy::Backup);
    assert!(
        disk.warnings()[0].contains("primary GPT"),
        "{:?}",
        disk.warnings()
    );
    assert_eq!(disk.partitions(), expected);
}

#[test]
fn corrupt_primary_entry_array_falls_back_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let expected = Disk::open(&path).unwrap().partitions();
    overwrite(&path, 2 * 512 + 56, b"garbage"); // inside entry 1's name
    let mut disk = Disk::open_rw(&path).unwrap();
    assert_eq!(disk.read_from(), GptCopy::Backup);
    assert_eq!(disk.partitions(), expected);
    // Committing repairs the primary.
    disk.commit().unwrap();
    let disk = Disk::open(&path).unwrap();
    assert_eq!(disk.read_from(), GptCopy::Primary);
    assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
}

#[test]
fn both_copies_corrupt_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    overwrite(&path, 512 + 56, &[0xff]);
    overwrite(&path, 64 * MIB - 512 + 56, &[0xff]);
    let e = Disk::open(&path).unwrap_err();
    assert!(matches!(e, DiskError::CorruptGpt { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("primary") && msg.contains("backup") && msg.contains("CRC32"),
        "{msg}"
    );
}

#[test]
fn partition_number_out_of_range_or_unused() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let mut disk = Disk::open_rw(&path).unwrap();
    for n in [0u32, 129, 4_000_000_000] {
        let e = disk.partition(n).unwrap_err();
        assert!(
            matches!(e, DiskError::PartitionOutOfRange { number, max: 128, .. } if number == n),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("partition {n} is out of range")),
            "{e}"
        );
        assert!(disk.set_label(n, "x").is_err());
    }
    let e = disk.update_prio(7, Some(1), None, None).unwrap_err();
    assert!(
        matches!(e, DiskError::PartitionUnused { number: 7, .. }),
        "{e}"
    );
    let e = disk.update_prio(2, Some(16), None, None).unwrap_err();
    assert!(e.to_string().contains("priority = 16"), "{e}");
}

#[test]
fn image_larger_than_partition_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let before = fs::read(&path).unwrap();
    let big = dir.path().join("big.erofs");
    let f = fs::File::create(&big).unwrap();
    f.set_len(16 * MIB + 1).unwrap();
    drop(f);
    let mut disk = Disk::open_rw(&path).unwrap();
    let e = disk.write_image_file(2, &big).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, DiskError::ImageTooLarge { number: 2, image_bytes, partition_bytes, .. }
            if image_bytes == 16 * MIB + 1 && partition_bytes == 16 * MIB),
        "{msg}"
    );
    assert!(
        msg.contains("big.erofs") && msg.contains("partition 2"),
        "{msg}"
    );
    let small = dir.path().join("small.verity");
    fs::write(&small, b"x").unwrap();
    let e = disk
        .install_usr_slot(UsrSlot::B, "2.0.0", &[7u8; 32], &big, &small)
        .unwrap_err();
    assert!(
        matches!(e, DiskError::ImageTooLarge { number: 4, .. }),
        "{e}"
    );
    drop(disk);
    assert_eq!(fs::read(&path).unwrap(), before, "nothing may be written");
}

#[test]
fn short_reader_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let mut disk = Disk::open_rw(&path).unwrap();
    let e = disk
        .write_image(2, &mut &b"only ten b"[..], 20, "stream")
        .unwrap_err();
    assert!(
        matches!(
            e,
            DiskError::ImageShort {
                got: 10,
                declared: 20,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn read_only_disk_refuses_edits() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let mut disk = Disk::open(&path).unwrap();
    disk.set_label(1, "new").unwrap();
    assert!(matches!(
        disk.commit().unwrap_err(),
        DiskError::ReadOnly { .. }
    ));
}

#[test]
fn label_too_long_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let mut disk = Disk::open_rw(&path).unwrap();
    let e = disk.set_label(1, &"x".repeat(37)).unwrap_err();
    assert!(e.to_string().contains("36 UTF-16"), "{e}");
    disk.set_label(1, &"x".repeat(36)).unwrap();
}

#[test]
fn disk_too_small_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut layout = small_layout();
    layout.disk_size = 32 * MIB;
    let e = create(&path, &layout).unwrap_err();
    assert!(
        matches!(e, DiskError::DiskTooSmall { disk_bytes, required_bytes, .. }
            if disk_bytes == 32 * MIB && required_bytes == 48 * MIB),
        "{e}"
    );
    assert!(e.to_string().contains("usr 16.0 MiB"), "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn failed_create_keeps_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    fs::write(&path, b"precious").unwrap();
    let mut layout = small_layout();
    layout.esp_size = 3;
    assert!(create(&path, &layout).is_err());
    assert_eq!(fs::read(&path).unwrap(), b"precious");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Recomputes the primary header's CRCs after editing its entry array, as a crafted (not merely
/// corrupted) disk would have them.
fn reseal_primary(path: &Path) {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut bytes = vec![0u8; 34 * 512];
    fs::File::open(path)
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let array_crc = crc32(&bytes[1024..1024 + 128 * 128]);
    bytes[512 + 88..512 + 92].copy_from_slice(&array_crc.to_le_bytes());
    bytes[512 + 16..512 + 20].copy_from_slice(&[0; 4]);
    let header_crc = crc32(&bytes[512..512 + 92]);
    bytes[512 + 16..512 + 20].copy_from_slice(&header_crc.to_le_bytes());
    overwrite(path, 0, &bytes);
}

#[test]
fn crafted_entries_outside_the_disk_use_the_backup_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let expected = Disk::open(&path).unwrap().partitions();
    let cases: &[(&str, u64, u64)] = &[
        ("starts at LBA 0", 0, 100),
        ("ends before it starts", 5000, 4000),
        ("ends past the last usable LBA", 2048, u64::MAX),
    ];
    for (name, start, end) in cases {
        // Entry 1: starting LBA at byte 32, ending LBA at byte 40 of the entry.
        overwrite(&path, 1024 + 32, &start.to_le_bytes());
        overwrite(&path, 1024 + 40, &end.to_le_bytes());
        reseal_primary(&path);
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.read_from(), GptCopy::Backup, "{name}");
        assert!(
            disk.warnings()[0].contains("partition 1 spans"),
            "{name}: {:?}",
            disk.warnings()
        );
        assert_eq!(disk.partitions(), expected, "{name}");
    }
}

mod crafted_headers {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any value in any header field, with valid CRCs: opening and showing never panics.
        #[test]
        fn never_panic(field in 0usize..8, value in prop_oneof![any::<u64>(), 0u64..200_000], both in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = disk(dir.path());
            // (offset, width) of primary_lba, backup_lba, first/last usable, disk GUID half,
            // entry LBA, entry count, entry size.
            const FIELDS: [(u64, usize); 8] =
                [(24, 8), (32, 8), (40, 8), (48, 8), (56, 8), (72, 8), (80, 4), (84, 4)];
            let (off, width) = FIELDS[field];
            overwrite(&path, 512 + off, &value.to_le_bytes()[..width]);
            reseal_primary(&path);
            if both {
                // Break the backup too, so the crafted primary is all there is.
                overwrite(&path, 64 * MIB - 512 + 8, &[9]);
            }
            match Disk::open(&path) {
                Ok(disk) => {
                    let report = disk.report();
                    let _ = report.to_string();
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}

#[test]
fn crafted_zero_usable_area_with_entries_at_lba_zero_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    overwrite(&path, 512 + 40, &0u64.to_le_bytes()); // first_usable_lba
    for entry in 0..2u64 {
        overwrite(&path, 1024 + entry * 128 + 32, &0u64.to_le_bytes());
    }
    reseal_primary(&path);
    let disk = Disk::open(&path).unwrap();
    assert_eq!(disk.read_from(), GptCopy::Backup);
    assert!(
        disk.warnings()[0].contains("usable LBAs 0..="),
        "{:?}",
        disk.warnings()
    );
}

#[test]
fn interrupted_reinstall_leaves_the_slot_marked_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = disk(dir.path());
    let usr = dir.path().join("usr.erofs");
    let verity = dir.path().join("usr.verity");
    fs::write(&usr, vec![1u8; 8192]).unwrap();
    fs::write(&verity, vec![2u8; 4096]).unwrap();
    let old_hash: Vec<u8> = (0x11..0x31).collect();
    let new_hash: Vec<u8> = (0x41..0x61).collect();
    let mut hash_uuids = Vec::new();
    for h in [&old_hash, &new_hash] {
        let (a, b) = keelson_disk::uuids_from_root_hash(h).unwrap();
        hash_uuids.extend([a, b]);
    }
    let mut disk = Disk::open_rw(&path).unwrap();
    disk.install_usr_slot(UsrSlot::B, "1.0.0", &old_hash, &usr, &verity)
        .unwrap();
    disk.commit().unwrap();
    let old = Disk::open(&path).unwrap().partition(4).unwrap();
    assert_eq!(old.label, "keelson_1.0.0");

    // The new usr "image" is a directory: its size fits, but reading it fails mid-install.
    let broken = dir.path().join("broken");
    fs::create_dir(&broken).unwrap();
    let mut disk = Disk::open_rw(&path).unwrap();
    let e = disk
        .install_usr_slot(UsrSlot::B, "2.0.0", &new_hash, &broken, &verity)
        .unwrap_err();
    assert!(e.to_string().contains("broken"), "{e}");
    drop(disk);

    // On disk the slot no longer claims 1.0.0 (its data is half gone) nor 2.0.0.
    let disk = Disk::open(&path).unwrap();
    for n in [4, 5] {
        let p = disk.partition(n).unwrap();
        assert_eq!(p.label, "_empty", "partition {n}");
        assert_ne!(
            p.uuid.as_bytes()[0],
            0x11,
            "partition {n} still has the old hash UUID"
        );
        assert_ne!(
            p.uuid.as_bytes()[0],
            0x22,
            "partition {n} has the new hash UUID"
        );
    }
    // Slot A was never touched.
    assert_eq!(disk.partition(2).unwrap().label, "_empty");
}

#[test]
fn crafted_entry_count_or_size_in_the_primary_uses_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    for (offset, value, needle) in [
        (80u64, 100_000u32, "100000 partition entries"),
        (84, 256, "entry size 256"),
    ] {
        let path = disk(dir.path());
        overwrite(&path, 512 + offset, &value.to_le_bytes());
        reseal_primary(&path);
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.read_from(), GptCopy::Backup);
        assert!(disk.warnings()[0].contains(needle), "{:?}", disk.warnings());
        assert_eq!(disk.partitions().len(), 6);
    }
}
