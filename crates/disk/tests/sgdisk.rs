//! keelson-disk against sgdisk (GPT fdisk) as the reference implementation: disks we write must
//! read back identically in sgdisk and pass `sgdisk -v`; disks sgdisk writes (Flatcar's layout
//! with its attribute bits) must read correctly here.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use keelson_disk::{
    Disk, DiskError, ESP_PARTITION, GptCopy, Layout, PrioBits, SlotState, UsrSlot, create, types,
};
use uuid::Uuid;

const MIB: u64 = 1 << 20;

fn small_layout() -> Layout {
    let mut l = Layout::new(64 * MIB);
    l.esp_size = 8 * MIB;
    l.usr_size = 16 * MIB;
    l.usr_verity_size = MIB;
    l.root_min_size = 4 * MIB;
    l
}

fn sgdisk(args: &[&str]) -> String {
    let out = Command::new("sgdisk").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sgdisk {args:?} failed: {text}");
    text
}

/// `sgdisk -i N` parsed into (type guid, unique guid, attributes, name, first, last).
#[derive(Debug, PartialEq)]
struct SgInfo {
    type_guid: Uuid,
    uuid: Uuid,
    attributes: u64,
    name: String,
    first: u64,
    last: u64,
}

fn sg_info(path: &Path, n: u32) -> SgInfo {
    let text = sgdisk(&["-i", &n.to_string(), path.to_str().unwrap()]);
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
            .trim()
            .to_string()
    };
    let type_field = field("Partition GUID code:");
    let name = field("Partition name:");
    let first_sector = field("First sector:");
    let last_sector = field("Last sector:");
    SgInfo {
        type_guid: type_field
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        uuid: field("Partition unique GUID:").parse().unwrap(),
        attributes: u64::from_str_radix(&field("Attribute flags:"), 16).unwrap(),
        name: name.trim_matches('\'').to_string(),
        first: first_sector
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        last: last_sector
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap(),
    }
}

fn assert_sgdisk_agrees(path: &Path) {
    let verify = sgdisk(&["-v", path.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    let disk = Disk::open(path).unwrap();
    let ours = disk.partitions();
    assert!(!ours.is_empty());
    for p in &ours {
        let sg = sg_info(path, p.number);
        assert_eq!(
            sg,
            SgInfo {
                type_guid: p.type_guid,
                uuid: p.uuid,
                attributes: p.attributes,
                name: p.label.clone(),
                first: p.first_lba,
                last: p.last_lba,
            },
            "partition {}",
            p.number
        );
    }
    let print = sgdisk(&["-p", path.to_str().unwrap()]);
    let guid = disk.disk_guid().to_string().to_uppercase();
    assert!(print.contains(&guid), "disk GUID {guid} not in {print}");
}

#[test]
fn created_disk_reads_back_in_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    create(&path, &small_layout()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 64 * MIB);
    assert_sgdisk_agrees(&path);

    let disk = Disk::open(&path).unwrap();
    let parts = disk.partitions();
    let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        ["esp", "_empty", "_empty", "_empty", "_empty", "root"]
    );
    assert_eq!(sg_info(&path, 2).type_guid, types::USR_X86_64.guid);
    assert_eq!(sg_info(&path, 3).type_guid, types::USR_VERITY_X86_64.guid);
    assert_eq!(sg_info(&path, 6).type_guid, types::ROOT_X86_64.guid);
    assert_eq!(disk.read_from(), GptCopy::Primary);
    assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
    // No temporary file is left next to the image.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn creation_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    create(&a, &small_layout()).unwrap();
    create(&b, &small_layout()).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
}

fn root_hash() -> Vec<u8> {
    (1..=32).collect()
}

#[test]
fn installed_slot_and_edits_read_back_in_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    create(&path, &small_layout()).unwrap();
    let usr = dir.path().join("usr.erofs");
    let verity = dir.path().join("usr.verity");
    let usr_data: Vec<u8> = (0..3 * MIB + 7).map(|i| (i % 251) as u8).collect();
    fs::write(&usr, &usr_data).unwrap();
    fs::write(&verity, vec![0xa5u8; 8192]).unwrap();
    let esp = dir.path().join("esp.vfat");
    fs::write(&esp, b"esp contents").unwrap();

    let mut disk = Disk::open_rw(&path).unwrap();
    disk.write_image_file(ESP_PARTITION, &esp).unwrap();
    disk.install_usr_slot(UsrSlot::A, "1.2.0", &root_hash(), &usr, &verity)
        .unwrap();
    disk.update_prio(4, Some(2), Some(1), Some(false)).unwrap();
    disk.set_attributes(6, 1 << 59).unwrap();
    disk.commit().unwrap();
    assert_sgdisk_agrees(&path);

    let sg = sg_info(&path, 2);
    assert_eq!(sg.name, "keelson_1.2.0");
    assert_eq!(sg.uuid.to_string(), "01020304-0506-0708-090a-0b0c0d0e0f10");
    assert_eq!(sg_info(&path, 3).name, "keelson_1.2.0_verity");
    assert_eq!(
        sg_info(&path, 3).uuid.to_string(),
        "11121314-1516-1718-191a-1b1c1d1e1f20"
    );
    assert_eq!(sg_info(&path, 4).attributes, 0x0012_0000_0000_0000);

    // The bytes landed at the partition's offset.
    let p2 = Disk::open(&path).unwrap().partition(2).unwrap();
    let mut f = fs::File::open(&path).unwrap();
    f.seek(SeekFrom::Start(p2.first_lba * 512)).unwrap();
    let mut back = vec![0u8; usr_data.len()];
    f.read_exact(&mut back).unwrap();
    assert_eq!(back, usr_data);

    let report = Disk::open(&path).unwrap().report();
    let SlotState::Keelson { slots } = &report.slots else {
        panic!("not a Keelson disk: {report:?}");
    };
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[0].version.as_deref(), Some("1.2.0"));
    assert_eq!(
        slots[0].root_hash.as_deref(),
        Some("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
    );
    assert!(slots[1].empty);
    assert_eq!(slots[1].version, None);
    assert_eq!(slots[1].prio, PrioBits::new(2, 1, false).unwrap());
    assert_eq!(slots[1].attributes_hex, "0012000000000000");
    let text = report.to_string();
    assert!(
        text.contains("B: usr 4 + verity 5, 16.0 MiB, empty, priority=2 tries=1 successful=false"),
        "{text}"
    );

    // The same hash cannot go into slot B as well: partition UUIDs must stay unique.
    let mut disk = Disk::open_rw(&path).unwrap();
    let e = disk
        .install_usr_slot(UsrSlot::B, "1.2.0", &root_hash(), &usr, &verity)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DiskError::DuplicateUuid {
                number: 4,
                other: 2,
                ..
            }
        ),
        "{e}"
    );
}

/// Flatcar's layout as its build writes it, made with sgdisk, with cgpt-style bits set via -A.
/// sgdisk spends a second per write, so the disk is made once and copied.
fn flatcar_disk(path: &Path) {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, template) = TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("flatcar-template.img");
        make_flatcar_disk(&template);
        (dir, template)
    });
    fs::copy(template, path).unwrap();
}

fn make_flatcar_disk(path: &Path) {
    let f = fs::File::create(path).unwrap();
    f.set_len(64 * MIB).unwrap();
    drop(f);
    let p = path.to_str().unwrap();
    sgdisk(&[
        "--disk-guid=00000000-0000-0000-0000-000000000001",
        "-n1:4096:+8M",
        "-t1:c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "-c1:EFI-SYSTEM",
        "-n2:0:+2M",
        "-t2:21686148-6449-6e6f-744e-656564454649",
        "-c2:BIOS-BOOT",
        "-n3:0:+16M",
        "-t3:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6",
        "-c3:USR-A",
        "-u3:7130c94a-213a-4e5a-8e26-6cce9662f132",
        "-n4:0:+16M",
        "-t4:5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6",
        "-c4:USR-B",
        "-u4:e03dd35c-7c2d-4a47-b3fe-27f15780a57c",
        "-n6:0:+8M",
        "-t6:0fc63daf-8483-4772-8e79-3d69d8477de4",
        "-c6:OEM",
        "-n7:0:+2M",
        "-t7:c95dc21a-df0e-4340-8d7b-26cbfa9a03e0",
        "-c7:OEM-CONFIG",
        "-n9:0:0",
        "-t9:3884dd41-8582-4404-b9a8-e9b84f2df50e",
        "-c9:ROOT",
        // cgpt add -S1 -P1 on USR-A: priority 1 (bit 48), successful (bit 56).
        "-A3:set:48",
        "-A3:set:56",
        p,
    ]);
}

#[test]
fn flatcar_disk_from_sgdisk_reads_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flatcar.img");
    flatcar_disk(&path);
    let disk = Disk::open(&path).unwrap();
    assert_eq!(
        disk.disk_guid().to_string(),
        "00000000-0000-0000-0000-000000000001"
    );
    let parts = disk.partitions();
    let got: Vec<(u32, &str, Option<&str>)> = parts
        .iter()
        .map(|p| (p.number, p.label.as_str(), p.type_name))
        .collect();
    assert_eq!(
        got,
        [
            (1, "EFI-SYSTEM", Some("esp")),
            (2, "BIOS-BOOT", Some("bios-boot")),
            (3, "USR-A", Some("coreos-usr")),
            (4, "USR-B", Some("coreos-usr")),
            (6, "OEM", Some("linux-data")),
            (7, "OEM-CONFIG", Some("coreos-reserved")),
            (9, "ROOT", Some("coreos-resize")),
        ]
    );
    let usr_a = disk.partition(3).unwrap();
    assert_eq!(
        usr_a.uuid.to_string(),
        "7130c94a-213a-4e5a-8e26-6cce9662f132"
    );
    assert_eq!(usr_a.attributes, 0x0101_0000_0000_0000);
    assert_eq!(usr_a.prio, PrioBits::new(1, 0, true).unwrap());
    for p in &parts {
        assert_eq!(sg_info(&path, p.number).first, p.first_lba);
    }

    let report = disk.report();
    let SlotState::Flatcar { slots, boots_next } = &report.slots else {
        panic!("not read as Flatcar: {report:?}");
    };
    assert_eq!(*boots_next, Some(3));
    assert_eq!(slots.len(), 2);
    assert!(slots[0].boots_next && !slots[1].boots_next);
    assert_eq!(slots[1].prio, PrioBits::default());
}

#[test]
fn flatcar_update_cycle_on_disk_matches_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flatcar.img");
    flatcar_disk(&path);
    // postinst: cgpt add -S0 -T1 USR-B; cgpt prioritize USR-B.
    let mut disk = Disk::open_rw(&path).unwrap();
    disk.update_prio(4, None, Some(1), Some(false)).unwrap();
    disk.prioritize(4, None, false).unwrap();
    disk.commit().unwrap();
    assert_eq!(sg_info(&path, 4).attributes, 0x0012_0000_0000_0000);
    assert_eq!(sg_info(&path, 3).attributes, 0x0101_0000_0000_0000);
    // Boot: GRUB picks USR-B and spends its try; sgdisk sees the new bits.
    let pick = Disk::open_rw(&path).unwrap().gptprio_next().unwrap();
    assert_eq!(pick.number, 4);
    assert_eq!(sg_info(&path, 4).attributes, 0x0002_0000_0000_0000);
    assert!(sgdisk(&["-v", path.to_str().unwrap()]).contains("No problems found"));
    // It never came up: the next boot falls back to USR-A and writes nothing.
    let before = gpt_regions(&path);
    let pick = Disk::open_rw(&path).unwrap().gptprio_next().unwrap();
    assert_eq!(pick.number, 3);
    assert_eq!(gpt_regions(&path), before);
}

/// The bytes a GPT write can touch: MBR + primary GPT, and the backup GPT.
fn gpt_regions(path: &Path) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    let mut out = vec![0u8; 2 * 34 * 512];
    f.read_exact(&mut out[..34 * 512]).unwrap();
    f.seek(SeekFrom::End(-34 * 512)).unwrap();
    f.read_exact(&mut out[34 * 512..]).unwrap();
    out
}

fn wipe(path: &Path, offset: u64, len: usize) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![0u8; len]).unwrap();
}

/// Flatcar disk with USR-A=(1,x,x) only, then one GPT copy wiped (the gptprio_test cases).
fn wiped_flatcar(dir: &Path, bits: PrioBits, wipe_primary: bool) -> PathBuf {
    let path = dir.join(format!("wiped-{wipe_primary}.img"));
    flatcar_disk(&path);
    let mut disk = Disk::open_rw(&path).unwrap();
    disk.update_prio(
        3,
        Some(bits.priority),
        Some(bits.tries),
        Some(bits.successful),
    )
    .unwrap();
    disk.commit().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    if wipe_primary {
        wipe(&path, 512, 33 * 512);
    } else {
        wipe(&path, len - 33 * 512, 33 * 512);
    }
    path
}

#[test]
fn gptprio_with_one_copy_wiped_and_nothing_to_spend_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for wipe_primary in [true, false] {
        let path = wiped_flatcar(dir.path(), PrioBits::new(1, 0, true).unwrap(), wipe_primary);
        let before = gpt_regions(&path);
        let mut disk = Disk::open_rw(&path).unwrap();
        assert_eq!(
            disk.read_from(),
            if wipe_primary {
                GptCopy::Backup
            } else {
                GptCopy::Primary
            }
        );
        assert!(!disk.warnings().is_empty());
        let pick = disk.gptprio_next().unwrap();
        assert_eq!(
            (pick.number, pick.after),
            (3, PrioBits::new(1, 0, true).unwrap())
        );
        assert_eq!(gpt_regions(&path), before, "wipe_primary={wipe_primary}");
    }
}

#[test]
fn gptprio_with_one_copy_wiped_and_a_try_to_spend_rewrites_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    for wipe_primary in [true, false] {
        let path = wiped_flatcar(
            dir.path(),
            PrioBits::new(1, 1, false).unwrap(),
            wipe_primary,
        );
        let pick = Disk::open_rw(&path).unwrap().gptprio_next().unwrap();
        assert_eq!(pick.after, PrioBits::new(1, 0, false).unwrap());
        // Both copies are whole again and agree.
        let verify = sgdisk(&["-v", path.to_str().unwrap()]);
        assert!(verify.contains("No problems found"), "{verify}");
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.read_from(), GptCopy::Primary);
        assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
        assert_eq!(
            disk.partition(3).unwrap().prio,
            PrioBits::new(1, 0, false).unwrap()
        );
        assert_eq!(sg_info(&path, 3).attributes, 0x0001_0000_0000_0000);
    }
}

mod against_sgdisk {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever label, UUID, attribute field and prio bits we write, sgdisk reads the same.
        #[test]
        fn edits_read_back_identically(
            number in 1u32..=6,
            label in "[A-Za-z0-9_.+-]{0,36}",
            uuid in any::<[u8; 16]>(),
            attrs in any::<u64>(),
            prio in (0u8..=15, 0u8..=15, any::<bool>()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("disk.img");
            create(&path, &small_layout()).unwrap();
            let mut disk = Disk::open_rw(&path).unwrap();
            let uuid = Uuid::from_bytes(uuid);
            disk.set_label(number, &label).unwrap();
            // A UUID that collides with another partition is refused; that is tested elsewhere.
            prop_assume!(disk.set_uuid(number, uuid).is_ok());
            disk.set_attributes(number, attrs).unwrap();
            let bits = disk.update_prio(number, Some(prio.0), Some(prio.1), Some(prio.2)).unwrap();
            prop_assert_eq!(bits, PrioBits::new(prio.0, prio.1, prio.2).unwrap());
            disk.commit().unwrap();
            let sg = sg_info(&path, number);
            prop_assert_eq!(&sg.name, &label);
            prop_assert_eq!(sg.uuid, uuid);
            prop_assert_eq!(sg.attributes, bits.apply(attrs));
            prop_assert_eq!(PrioBits::from_attributes(sg.attributes), bits);
            let verify = sgdisk(&["-v", path.to_str().unwrap()]);
            prop_assert!(verify.contains("No problems found"), "{}", verify);
        }
    }
}
