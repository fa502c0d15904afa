//! The initrd's definition in `os/` keeps its promises (docs/image.md, "The initrd"): the
//! drivers of the machines Keelson supports are in dracut's exclusive list, the first-boot
//! stages run from the verity-checked /usr, and the boot never waits on dracut's shell hooks.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn os_file(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../os/rootfs")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The words of the dracut setting `name` (every `name=` and `name+=` line, quotes removed).
fn dracut_list(conf: &str, name: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            l.strip_prefix(&format!("{name}+="))
                .or_else(|| l.strip_prefix(&format!("{name}=")))
        })
        .flat_map(|v| v.trim().trim_matches('"').split_whitespace())
        .map(str::to_string)
        .collect()
}

const DRACUT_CONF: &str = "etc/dracut.conf.d/10-keelson.conf";

#[test]
fn the_supported_machines_disks_and_nics_are_in_the_driver_list() {
    let conf = os_file(DRACUT_CONF);
    let drivers = dracut_list(&conf, "drivers");
    for want in [
        // QEMU/KVM, GCP, OpenStack
        "virtio_blk",
        "virtio_scsi",
        "virtio_net",
        "gve",
        // bare metal
        "ahci",
        "sd_mod",
        // AWS
        "ena",
        "xen_blkfront",
        "xen_netfront",
        // Azure / Hyper-V
        "hv_storvsc",
        "hv_netvsc",
        // VMware
        "vmw_pvscsi",
        "vmxnet3",
        // the boot disk itself
        "erofs",
        "ext4",
        "vfat",
        "dm_verity",
        "loop",
    ] {
        assert!(
            drivers.iter().any(|d| d == want),
            "{want} missing: {drivers:?}"
        );
    }
    // dracut's replacement of '-' by '_' only touches the first one: names use '_'.
    assert!(drivers.iter().all(|d| !d.contains('-')), "{drivers:?}");
    // Never the generic everything-initrd again.
    assert!(conf.lines().any(|l| l == "hostonly=\"no\""), "{conf}");
    let omitted = dracut_list(&conf, "omit_dracutmodules");
    for gone in ["dracut-systemd", "hwdb", "kernel-modules-extra", "bash"] {
        assert!(omitted.iter().any(|m| m == gone), "{gone} not omitted");
    }
    let added = dracut_list(&conf, "add_dracutmodules");
    for need in [
        "systemd-initrd",
        "systemd-veritysetup",
        "systemd-repart",
        "keelson",
    ] {
        assert!(added.iter().any(|m| m == need), "{need} not added");
    }
}

#[test]
fn first_boot_stages_run_from_the_verity_checked_usr() {
    let dir = "usr/lib/dracut/modules.d/98keelson-firstboot";
    for stage in ["fetch", "disks", "mount", "files", "done"] {
        let unit = os_file(&format!("{dir}/keelson-firstboot-{stage}.service"));
        assert!(
            unit.lines().any(
                |l| l == format!("ExecStart=/sysusr/usr/bin/keelson-firstboot --stage {stage}")
            ),
            "{stage}: {unit}"
        );
        assert!(
            unit.lines().any(|l| l == "RequiresMountsFor=/sysusr/usr"),
            "{stage}: {unit}"
        );
        assert!(
            unit.lines().any(|l| l == "OnFailure=emergency.target"),
            "{stage}: {unit}"
        );
    }
    let setup = os_file(&format!("{dir}/module-setup.sh"));
    assert!(!setup.contains("inst_binary keelson-firstboot"), "{setup}");
    let networkd = os_file(&format!("{dir}/networkd-sysusr.conf"));
    assert!(
        networkd
            .lines()
            .any(|l| l == "ExecStart=!!/sysusr/usr/lib/systemd/systemd-networkd"),
        "{networkd}"
    );
}

#[test]
fn the_initrd_has_a_default_target_and_an_emergency_handler_without_dracut_hooks() {
    let setup = os_file("usr/lib/dracut/modules.d/99keelson/module-setup.sh");
    assert!(
        setup.contains(
            "ln_r \"$systemdsystemunitdir/initrd.target\" \"$systemdsystemunitdir/default.target\""
        ),
        "{setup}"
    );
    let unit = os_file("usr/lib/dracut/modules.d/99keelson/emergency.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/lib/keelson/keelson-emergency"),
        "{unit}"
    );
    // The handler runs under dash: no bash in the initrd.
    let script = os_file("usr/lib/dracut/modules.d/99keelson/keelson-emergency.sh");
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
}

#[test]
fn later_boots_are_told_apart_before_usr_and_first_boot_modules_come_from_usr() {
    let dir = "usr/lib/dracut/modules.d/98keelson-firstboot";
    // Every stage (and the module loader switch) runs on the first boot only, by conditions
    // PID 1 checks itself: the ESP's marker as systemd-stub hands it to the initrd, or the
    // command line. No process and no mount of the ESP on a later boot.
    for unit in ["fetch", "disks", "mount", "files", "done", "modprobe"] {
        let text = os_file(&format!("{dir}/keelson-firstboot-{unit}.service"));
        let conditions: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Condition"))
            .collect();
        let mut first_boot = vec![
            "ConditionPathExists=|/.extra/global_credentials/keelson.first_boot.cred",
            "ConditionKernelCommandLine=|keelson.first_boot=1",
        ];
        if unit == "modprobe" {
            // And only for a config with something to format, assemble or open.
            first_boot.push("ConditionPathExists=/run/keelson/storage");
        }
        assert_eq!(conditions, first_boot, "{unit}: {text}");
    }
    // The first-boot-only modules are omitted, never the boot disk's own or what they need.
    let conf = os_file(DRACUT_CONF);
    let omitted = dracut_list(&conf, "omit_drivers");
    for only_first_boot in [
        "xfs",
        "md_mod",
        "raid1",
        "raid456",
        "dm_crypt",
        "algif_skcipher",
    ] {
        assert!(
            omitted.iter().any(|m| m == only_first_boot),
            "{only_first_boot} not omitted"
        );
    }
    for boot_disk in [
        "dm_verity",
        "dm_mod",
        "dm_bufio",
        "erofs",
        "libcrc32c",
        "reed_solomon",
    ] {
        assert!(
            !omitted.iter().any(|m| m == boot_disk),
            "{boot_disk} omitted: /usr would not mount"
        );
    }
    let modprobe = os_file(&format!("{dir}/keelson-firstboot-modprobe.service"));
    assert!(
        modprobe
            .lines()
            .any(|l| l == "Conflicts=initrd-switch-root.target"),
        "the real root must get its own module loader back: {modprobe}"
    );
}

/// The subsystem of the device each driver of the initrd's list binds to; `None` for what no
/// coldplugged device loads (file systems, device-mapper and loop, which their users load).
const DRIVER_SUBSYSTEMS: &[(&str, Option<&str>)] = &[
    ("virtio_pci", Some("pci")),
    ("nvme", Some("pci")),
    ("ahci", Some("pci")),
    ("ata_piix", Some("pci")),
    ("ena", Some("pci")),
    ("gve", Some("pci")),
    ("ixgbevf", Some("pci")),
    ("vmw_pvscsi", Some("pci")),
    ("vmxnet3", Some("pci")),
    ("virtio_blk", Some("virtio")),
    ("virtio_scsi", Some("virtio")),
    ("virtio_net", Some("virtio")),
    ("sd_mod", Some("scsi")),
    ("xen_blkfront", Some("xen")),
    ("xen_netfront", Some("xen")),
    // Hyper-V's VMBus is an ACPI device; the disks and NICs sit on the VMBus.
    ("hv_vmbus", Some("acpi")),
    ("hv_storvsc", Some("vmbus")),
    ("hv_netvsc", Some("vmbus")),
    ("erofs", None),
    ("ext4", None),
    ("vfat", None),
    ("nls_cp437", None),
    ("nls_iso8859_1", None),
    ("efivarfs", None),
    ("dm_mod", None),
    ("dm_verity", None),
    ("loop", None),
    // keelson-cpu-crypto.service loads these before their users choose an implementation.
    ("sha256_ssse3", None),
    ("crc32c_intel", None),
];

#[test]
fn the_cpus_sha256_and_crc32c_are_loaded_before_verity_and_the_root_choose() {
    let conf = os_file(DRACUT_CONF);
    let drivers = dracut_list(&conf, "drivers");
    for m in ["sha256_ssse3", "crc32c_intel"] {
        assert!(drivers.iter().any(|d| d == m), "{m} missing: {drivers:?}");
    }
    let dir = "usr/lib/dracut/modules.d/99keelson";
    let unit = os_file(&format!("{dir}/keelson-cpu-crypto.service"));
    let lines: Vec<&str> = unit.lines().collect();
    for want in [
        "DefaultDependencies=no",
        "ConditionCPUFeature=ssse3",
        "Before=systemd-veritysetup@usr.service systemd-fsck-root.service sysroot.mount",
        "ExecStart=-modprobe -abq sha256_ssse3 crc32c_intel",
    ] {
        assert!(lines.contains(&want), "{want:?} missing: {unit}");
    }
    let setup = os_file(&format!("{dir}/module-setup.sh"));
    assert!(
        setup.contains("add-wants sysinit.target keelson-cpu-crypto.service"),
        "{setup}"
    );
}

#[test]
fn the_initrd_coldplugs_the_bus_of_every_driver_it_carries() {
    let setup = os_file("usr/lib/dracut/modules.d/99keelson/module-setup.sh");
    assert!(
        setup.contains("\"$systemdsystemunitdir/systemd-udev-trigger.service.d/50-keelson.conf\""),
        "{setup}"
    );
    let dropin = os_file("usr/lib/dracut/modules.d/99keelson/udev-trigger.conf");
    let exec: Vec<&str> = dropin
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    // The stock command is reset, then replaced by one trigger.
    assert_eq!(exec.len(), 2, "{dropin}");
    assert_eq!(exec[0], "ExecStart=", "{dropin}");
    let words: Vec<&str> = exec[1].split_whitespace().collect();
    assert!(words.contains(&"--action=add"), "{dropin}");
    let matched: Vec<&str> = words
        .iter()
        .filter_map(|w| w.strip_prefix("--subsystem-match="))
        .collect();
    // Block devices and links whose drivers are built in (nvme, for one) exist before udev.
    for need in ["block", "net"] {
        assert!(matched.contains(&need), "{need} not coldplugged: {dropin}");
    }
    let conf = os_file(DRACUT_CONF);
    for driver in dracut_list(&conf, "drivers") {
        let Some((_, subsystem)) = DRIVER_SUBSYSTEMS.iter().find(|(d, _)| *d == driver) else {
            panic!("{driver}: name the subsystem its devices sit on in DRIVER_SUBSYSTEMS");
        };
        if let Some(s) = subsystem {
            assert!(
                matched.contains(s),
                "{driver} binds on {s}, not coldplugged: {dropin}"
            );
        }
    }
}
