//! VM tests of a built image: boot through OVMF + systemd-boot, /usr on dm-verity, tamper
//! detection, the container-runtime contract, reproducible builds.
//!
//! They need a built image and QEMU, so they are `#[ignore]`d and run by `cargo xtask test`
//! (xtask/src/vm.rs), which builds the image once and points these variables at it:
//! - `KEELSON_VM_BUILD`: the build record (`<out>/keelson_<version>.json`),
//! - `KEELSON_VM_BUSYBOX`: a statically linked busybox, the one binary of the test container,
//! - `KEELSON_VM_OS`: the `os/` directory the image was built from (for the rebuild test),
//! - `KEELSON_VM_UPDATE_KEY`: the development update key the image trusts (rebuild test).
//!
//! A test that cannot run (variable missing, QEMU missing) fails; nothing is skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use keelson_image::qemu::{Vm, VmOptions};

/// Generous: CI runs TCG on two shared cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const SLOW_COMMAND: Duration = Duration::from_secs(300);

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run the VM tests through `cargo xtask test`"),
    }
}

fn build_record() -> serde_json::Value {
    let p = env_path("KEELSON_VM_BUILD");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Boot `image` and log in; `snapshot` discards the guest's writes.
fn boot(image: &Path, extra_disks: Vec<PathBuf>, snapshot: bool) -> Vm {
    boot_on(image, extra_disks, snapshot, None)
}

/// [`boot`] on the QEMU CPU model `cpu` (the harness's own when `None`).
fn boot_on(image: &Path, extra_disks: Vec<PathBuf>, snapshot: bool, cpu: Option<&str>) -> Vm {
    let mut o = VmOptions::new(image);
    if let Some(cpu) = cpu {
        o.cpu_model = cpu.into();
    }
    o.snapshot = snapshot;
    o.extra_disks = extra_disks;
    // Test access without test hooks in the image: systemd's serial getty imports this.
    o.credentials
        .push(("agetty.autologin".into(), "root".into()));
    o.credentials.push(("login.noauth".into(), "yes".into()));
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    settle(&mut vm, 0);
    vm
}

/// Make the disk image at `path` `by` bytes larger, as a cloud grows a volume.
fn grow_disk(path: &Path, by: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len + by)
        .unwrap();
}

/// The root partition's size and the size of the file system on /, in bytes.
fn root_sizes(vm: &mut Vm) -> (u64, u64) {
    let mut bytes = |cmd: &str| -> u64 {
        let out = check(vm, cmd);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{cmd}: {out:?}: {e}"))
    };
    (
        bytes("lsblk -bdno SIZE /dev/disk/by-partlabel/root"),
        bytes("df -B1 --output=size / | tail -n 1"),
    )
}

/// Log in to the shell that appears after console offset `from` and wait for the boot to end.
fn settle(vm: &mut Vm, from: usize) {
    // systemd stops printing status lines once the serial getty owns the console, so the
    // target is checked from inside: wait for the boot job queue to drain.
    vm.login_from(from, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let state = vm
        .run_with_timeout("systemctl is-system-running --wait", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let state = state.output.trim().to_string();
    if state != "running" {
        let failed = vm
            .run("systemctl --failed --no-legend --no-pager")
            .map(|o| o.output);
        eprintln!("system state {state:?}; failed units: {failed:?}");
    }
}

/// The partitions of a disk image's GPT, read on the host.
fn gpt(image: &Path) -> Vec<keelson_disk::PartitionInfo> {
    keelson_disk::Disk::open(image)
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
        .partitions()
}

fn check(vm: &mut Vm, cmd: &str) -> String {
    vm.check(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// (a) boots through OVMF and systemd-boot to multi-user.target (the disk is exactly the image:
/// root is created in the free space it reserves); (b) /usr is the verity device with the built
/// root hash, read-only; (d) containerd runs a locally built OCI image; then (c) a copy with one
/// byte changed in a /usr file's data fails to read that file with EIO. That copy is also 1 GiB
/// larger: its first boot creates the root partition over all the free space with an ext4 of
/// that size, seeded from the factory copy, with the node's own SSH host keys and machine ID;
/// a reboot finds the same file system with what the first boot wrote in /etc and /var.
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn boot_verity_runtime_and_tamper() {
    let rec = build_record();
    let image = PathBuf::from(rec["image"].as_str().unwrap());
    let root_hash = rec["usr_root_hash"].as_str().unwrap().to_string();
    // The container image: busybox alone, built here; no registry involved.
    let busybox_path = env_path("KEELSON_VM_BUSYBOX");
    let busybox =
        std::fs::read(&busybox_path).unwrap_or_else(|e| panic!("{}: {e}", busybox_path.display()));
    let expect = format!("keelson-container-ok-{}", std::process::id());
    let cmd = ["/bin/busybox", "echo", expect.as_str()];
    let spec = keelson_image::oci::OciSpec {
        name: "docker.io/library/keelson-hello:1",
        binary_path: "bin/busybox",
        binary: &busybox,
        cmd: &cmd,
    };
    let scratch = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let oci = scratch.path().join("hello.oci.tar");
    keelson_image::oci::write_archive(&spec, &oci).unwrap();

    let mut vm = boot(&image, vec![oci], true);

    // (a) multi-user.target is active and systemd-boot loaded the UKI.
    assert_eq!(
        check(&mut vm, "systemctl is-active multi-user.target").trim(),
        "active"
    );
    let loader = check(
        &mut vm,
        "tr -d '\\000' < /sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
    );
    assert!(loader.contains("systemd-boot"), "LoaderInfo: {loader:?}");
    let stub = check(
        &mut vm,
        "tr -d '\\000' < /sys/firmware/efi/efivars/StubInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f",
    );
    assert!(stub.contains("systemd-stub"), "StubInfo: {stub:?}");
    // A disk exactly the image's size: root was made in the space the image reserves.
    let rootfs = check(&mut vm, "findmnt -n -o SOURCE,FSTYPE /");
    assert_eq!(
        rootfs.split_whitespace().collect::<Vec<_>>(),
        ["/dev/vda6", "ext4"],
        "{rootfs}"
    );
    // Root keeps its links by partlabel and by-path (`-partN`, and the legacy `virtio-`
    // one), without systemd 257's `by-path/<path>-part/by-*` family or its device units
    // (61-keelson-disk-links.rules, in the real root and the initrd: links the initrd's
    // coldplug made would stay).
    let links = check(
        &mut vm,
        "readlink -f /dev/disk/by-partlabel/root /dev/disk/by-path/*-part6; \
         ls -d /dev/disk/by-path/*-part 2>/dev/null || true",
    );
    assert_eq!(
        links.lines().collect::<Vec<_>>(),
        ["/dev/vda6", "/dev/vda6", "/dev/vda6"],
        "{links}"
    );
    // Judged here, not by a grep in the guest: a listing that failed or came back empty
    // cannot pass for one without the family.
    let devices = check(
        &mut vm,
        "systemctl list-units --all --plain --no-legend --no-pager -t device",
    );
    assert!(devices.contains("dev-vda6.device"), "{devices}");
    assert!(!devices.contains("x2dpart-by"), "{devices}");
    let osr = check(&mut vm, "cat /usr/lib/os-release");
    assert!(osr.contains("ID=keelson"), "{osr}");
    assert!(
        osr.contains(&format!("VERSION_ID={}", rec["version"].as_str().unwrap())),
        "{osr}"
    );

    // (b) /usr: erofs on the dm-verity device, read-only, with the root hash the build printed.
    let mnt = check(&mut vm, "findmnt -n -o SOURCE,FSTYPE,OPTIONS /usr");
    let fields: Vec<&str> = mnt.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some("/dev/mapper/usr"), "{mnt}");
    assert_eq!(fields.get(1).copied(), Some("erofs"), "{mnt}");
    assert!(
        fields
            .get(2)
            .is_some_and(|o| o.split(',').any(|x| x == "ro")),
        "{mnt}"
    );
    let table = check(&mut vm, "dmsetup table usr");
    let t: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(t.get(2).copied(), Some("verity"), "{table}");
    assert_eq!(
        t.get(11).copied(),
        Some(root_hash.as_str()),
        "verity table {table} vs build {root_hash}"
    );
    // The harness's CPU model has no SSSE3: the CPU crypto unit of the initrd is skipped by
    // its condition, and verity hashes with the generic sha256 (the tampered copy below
    // boots on a CPU that has it).
    let crypto = check(
        &mut vm,
        "journalctl -b --no-pager -o cat | grep -e keelson-cpu-crypto -e 'verity: sha256'",
    );
    assert!(
        crypto.contains("ConditionCPUFeature=ssse3") && crypto.contains("\"sha256-generic\""),
        "{crypto}"
    );
    // The build did what a first boot's update units do (ldconfig, sysusers, the journal's
    // catalog) and stamped /etc and /var for this /usr: on this first boot all four were
    // skipped by `ConditionNeedsUpdate=`, and the linker cache and catalog are the build's.
    let updates = check(
        &mut vm,
        "systemctl show -p Id -p ConditionResult -p ActiveEnterTimestampMonotonic ldconfig.service \
         systemd-sysusers.service systemd-journal-catalog-update.service \
         systemd-update-done.service; cat /etc/.updated /var/.updated; stat -c '%Y %n' /usr \
         /etc/.updated /var/.updated; test -s /etc/ld.so.cache && \
         test -s /var/lib/systemd/catalog/database && echo caches-there",
    );
    let blocks: Vec<Vec<&str>> = updates.split("\n\n").map(|b| b.lines().collect()).collect();
    for unit in [
        "ldconfig.service",
        "systemd-sysusers.service",
        "systemd-journal-catalog-update.service",
        "systemd-update-done.service",
    ] {
        let id = format!("Id={unit}");
        let block = blocks
            .iter()
            .find(|b| b.contains(&id.as_str()))
            .unwrap_or_else(|| panic!("no properties of {unit}: {updates}"));
        assert!(
            block.contains(&"ConditionResult=no")
                && block.contains(&"ActiveEnterTimestampMonotonic=0"),
            "{unit} ran on the first boot: {updates}"
        );
    }
    let times: Vec<&str> = updates
        .lines()
        .filter(|l| l.ends_with(" /usr") || l.ends_with("/.updated"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(times.len(), 3, "{updates}");
    assert!(times.iter().all(|t| *t == times[0]), "{updates}");
    assert!(updates.contains("caches-there"), "{updates}");
    let w = vm.run("touch /usr/keelson-write-test").unwrap();
    assert_ne!(w.status, 0, "writing to /usr succeeded: {}", w.output);
    assert!(w.output.contains("Read-only file system"), "{}", w.output);

    // (d) containerd runs a container from a local OCI archive (attached as /dev/vdb).
    let r = vm
        .run_with_timeout("ctr -n default image import /dev/vdb", SLOW_COMMAND)
        .unwrap();
    assert_eq!(r.status, 0, "ctr image import: {}", r.output);
    let name = "docker.io/library/keelson-hello:1";
    let r = vm
        .run_with_timeout(
            &format!("ctr -n default run --rm {name} keelson-t1"),
            SLOW_COMMAND,
        )
        .unwrap();
    assert_eq!(r.status, 0, "ctr run: {}", r.output);
    assert!(
        r.output.contains(&expect),
        "container said {:?}, expected {expect:?}",
        r.output
    );

    // (c) pick a file whose data blocks are stored plain (already compressed, so erofs keeps
    // it uncompressed) and find its first block on the erofs device.
    let file = check(
        &mut vm,
        "find /usr/share/doc -name '*.gz' -size +16k | sort | head -n 1",
    )
    .trim()
    .to_string();
    assert!(
        file.starts_with("/usr/share/doc/"),
        "no candidate file: {file:?}"
    );
    let frag = check(&mut vm, &format!("filefrag -v -b4096 {file}"));
    let block: u64 = frag
        .lines()
        .find_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix("0:")?;
            // "0:        0..       3:      12345..     12348:      4:   ..."
            let phys = rest.split(':').nth(1)?;
            phys.trim().split("..").next()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no first extent in filefrag output:\n{frag}"));
    drop(vm);

    let usr = rec["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uuid"].as_str() == rec["usr_partuuid"].as_str())
        .unwrap()
        .clone();
    let offset = usr["start"].as_u64().unwrap() + block * 4096 + 1000;
    let dir = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let bad = dir.path().join("tampered.img");
    let st = std::process::Command::new("cp")
        .args(["--sparse=always"])
        .arg(&image)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(st.success());
    // The disk a cloud gives is larger than the image: grow the copy by 1 GiB, and on this
    // first boot systemd-repart must grow the root partition into it.
    let grow: u64 = 1 << 30;
    let len = std::fs::metadata(&bad).unwrap().len();
    grow_disk(&bad, grow);
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bad)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 0x5a;
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&b).unwrap();
    }
    // The image has no root partition: it reserves the space, and the first boot makes it.
    let root_min = rec["root_min_size"].as_u64().unwrap();
    assert!(root_min > 0, "no root_min_size in the build record");
    assert!(
        !rec["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["label"].as_str() == Some("root")),
        "the build record lists a root partition"
    );
    let before = gpt(&bad);
    assert!(
        !before
            .iter()
            .any(|p| p.number == keelson_disk::ROOT_PARTITION || p.label == "root"),
        "the image has a root partition: {before:?}"
    );
    let last_end = before
        .iter()
        .map(|p| (p.last_lba + 1) * keelson_disk::SECTOR_SIZE)
        .max()
        .unwrap();
    assert!(
        last_end + root_min + (1 << 20) <= len,
        "the image ({len} bytes) keeps no {root_min} bytes free after its last partition ({last_end})"
    );

    // Not a snapshot: the reboot below must see what this boot wrote. A CPU with SSSE3 and
    // SSE4.2, as every x86 server has: the initrd loads their sha256 and crc32c before
    // dm-verity and ext4 choose theirs, which they keep for the uptime.
    let mut vm = boot_on(
        &bad,
        Vec::new(),
        false,
        Some("qemu64,+rdrand,+ssse3,+sse4.1,+sse4.2"),
    );
    let crypto = check(
        &mut vm,
        "journalctl -b --no-pager -o cat | grep -e keelson-cpu-crypto -e 'verity: sha256'",
    );
    let finished = crypto
        .find("Finished keelson-cpu-crypto.service")
        .unwrap_or_else(|| panic!("the CPU crypto unit did not run: {crypto}"));
    let verity = crypto
        .find("verity: sha256 using shash \"sha256-ssse3\"")
        .unwrap_or_else(|| panic!("verity does not use the CPU's sha256: {crypto}"));
    assert!(finished < verity, "{crypto}");
    let r = vm.run(&format!("cat {file} > /dev/null")).unwrap();
    assert_ne!(r.status, 0, "reading the tampered {file} succeeded");
    assert!(
        r.output.contains("Input/output error"),
        "reading {file}: {}",
        r.output
    );
    // Untouched files still read fine.
    check(&mut vm, "cat /usr/lib/os-release > /dev/null");

    // Root: partition 6, created over the rest of the grown disk, an ext4 of about that size.
    let repart = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u systemd-repart.service | tail -n 30",
    );
    eprintln!("systemd-repart, first boot:\n{repart}");
    // Formatted and populated in place through a loop device over the partition: without
    // the loop module repart falls back to building the file system in a file in the
    // initrd's RAM and copying it over.
    assert!(
        repart.contains("/dev/loop") && repart.contains("successfully formatted as ext4"),
        "{repart}"
    );
    let mnt = check(&mut vm, "findmnt -n -o SOURCE,FSTYPE,UUID /");
    let fields: Vec<&str> = mnt.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some("/dev/vda6"), "{mnt}");
    assert_eq!(fields.get(1).copied(), Some("ext4"), "{mnt}");
    let fs_uuid = fields.get(2).unwrap().to_string();
    let (part, fs_size) = root_sizes(&mut vm);
    assert!(
        part >= root_min + grow - (4 << 20),
        "root partition is {part} bytes; the image reserved {root_min}, the disk grew by {grow}"
    );
    assert!(
        fs_size >= part / 100 * 93 && fs_size <= part,
        "the file system on / is {fs_size} bytes, the partition {part}"
    );
    // Seeded from the factory copy; the /bin links of an empty root come from systemd.
    check(
        &mut vm,
        "test -s /etc/os-release && test -s /var/lib/dpkg/status",
    );
    assert_eq!(check(&mut vm, "readlink /bin").trim(), "usr/bin");
    assert_eq!(check(&mut vm, "readlink /sbin").trim(), "usr/sbin");

    // No node identity in the image; the node made its own.
    assert_eq!(
        check(&mut vm, "cat /usr/share/factory/etc/machine-id").trim(),
        "uninitialized"
    );
    let leaked = check(
        &mut vm,
        "ls /usr/share/factory/etc/ssh/ /usr/share/factory/var/lib/systemd/ /usr/share/factory/etc/",
    );
    for name in ["ssh_host_", "random-seed", "hostname"] {
        assert!(
            !leaked.contains(name),
            "{name} in the factory copy:\n{leaked}"
        );
    }
    // No resolver of the build host: /etc/resolv.conf is systemd-resolved's stub, a link the
    // package made, and the node's resolver answers there.
    let link = check(&mut vm, "readlink /usr/share/factory/etc/resolv.conf");
    assert!(
        link.trim()
            .ends_with("run/systemd/resolve/stub-resolv.conf"),
        "factory resolv.conf is {link:?}"
    );
    let live = check(&mut vm, "cat /etc/resolv.conf");
    assert!(live.contains("nameserver 127.0.0.53"), "{live}");
    let machine_id = check(&mut vm, "cat /etc/machine-id").trim().to_string();
    assert!(
        machine_id.len() == 32 && machine_id.chars().all(|c| c.is_ascii_hexdigit()),
        "machine-id {machine_id:?}"
    );
    assert_eq!(
        check(
            &mut vm,
            "systemctl is-active keelson-ssh-keygen.service ssh.service"
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["active", "active"]
    );
    let host_key = check(&mut vm, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");

    // The first boot applied the presets with Keelson's own (80-keelson.preset) first: the
    // journal's audit socket stayed off, so journald never switched kernel auditing on.
    assert_eq!(
        check(
            &mut vm,
            "systemctl is-enabled systemd-journald-audit.socket; \
             systemctl is-active systemd-journald-audit.socket; true"
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["disabled", "inactive"]
    );
    let journald = check(&mut vm, "journalctl -b -o cat -t systemd-journald");
    assert!(
        journald.contains("Collecting audit messages is disabled")
            && !journald.contains("Collecting audit messages is enabled"),
        "{journald}"
    );

    // No extension files on this node: keelson-extensions-link.service, on the way to
    // sysinit.target, was skipped by its condition instead of starting the agent.
    assert_eq!(
        check(
            &mut vm,
            "systemctl show --value -p ConditionResult keelson-extensions-link.service"
        )
        .trim(),
        "no"
    );

    // Node state survives a reboot: repart finds its partition and changes nothing.
    let token = format!("keelson-state-{}", std::process::id());
    check(
        &mut vm,
        &format!(
            "echo {token} > /etc/keelson-state && mkdir -p /var/lib/keelson-state \
             && echo {token} > /var/lib/keelson-state/token && sync"
        ),
    );
    let from = vm.console_text().len();
    vm.send("systemctl reboot\n").unwrap();
    let again = vm
        .wait_for_from("Linux version", from, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // The reset was a new QEMU (the harness's power cycle), on the same disk.
    assert_eq!(vm.resets(), 1, "the reboot was not one guest reset");
    settle(&mut vm, again);
    assert_eq!(check(&mut vm, "cat /etc/keelson-state").trim(), token);
    assert_eq!(
        check(&mut vm, "cat /var/lib/keelson-state/token").trim(),
        token
    );
    let mnt2 = check(&mut vm, "findmnt -n -o SOURCE,FSTYPE,UUID /");
    assert_eq!(mnt2.trim(), mnt.trim(), "root changed across the reboot");
    assert_eq!(
        check(&mut vm, "cat /etc/machine-id").trim(),
        machine_id,
        "machine-id changed across the reboot"
    );
    assert_eq!(
        check(&mut vm, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"),
        host_key,
        "SSH host key changed across the reboot"
    );
    // With every key there, the key unit was skipped by its conditions; a key lost later is
    // made again when it starts.
    assert_eq!(
        check(
            &mut vm,
            "systemctl show --value -p ConditionResult keelson-ssh-keygen.service"
        )
        .trim(),
        "no"
    );
    check(
        &mut vm,
        "rm /etc/ssh/ssh_host_ecdsa_key.pub && systemctl restart keelson-ssh-keygen.service",
    );
    check(&mut vm, "ssh-keygen -lf /etc/ssh/ssh_host_ecdsa_key.pub");
    // systemd-gpt-auto-generator is masked: the ESP has one automount, /efi, not a second
    // one at /boot.
    assert_eq!(
        check(
            &mut vm,
            "systemctl show --value -p LoadState boot.automount efi.automount"
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["not-found", "loaded"]
    );
    // Nothing to create or grow: the initrd skipped systemd-repart (keelson-repart-needed),
    // so udev saw no change events for the disk, and the growfs unit.
    let repart = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u systemd-repart.service -u keelson-growfs-root.service",
    );
    assert!(
        repart.contains("systemd-repart.service: Skipped due to 'exec-condition'")
            && !repart.contains("Finished keelson-growfs-root.service"),
        "{repart}"
    );
    eprintln!("root file system {fs_uuid} kept across the reboot");
    drop(vm);

    // On the host: the disk now has the root partition, where the image had free space.
    let after = gpt(&bad);
    let root = after
        .iter()
        .find(|p| p.number == keelson_disk::ROOT_PARTITION)
        .unwrap_or_else(|| panic!("no partition 6 after the first boot: {after:?}"));
    assert_eq!(root.label, "root");
    assert_eq!(root.size_bytes, part);
    assert!(root.first_lba * keelson_disk::SECTOR_SIZE >= last_end);

    // A disk grown after the first boot (a cloud volume resized, then a boot): repart, which
    // later boots otherwise skip, grows root into the new space, and keelson-growfs-root
    // grows its ext4 before switch-root.
    let more: u64 = 256 << 20;
    grow_disk(&bad, more);
    let mut vm = boot(&bad, Vec::new(), false);
    let (grown, grown_fs) = root_sizes(&mut vm);
    assert!(
        grown >= part + more - (4 << 20),
        "root partition {grown} bytes after the disk grew by {more}; it was {part}"
    );
    assert!(
        grown_fs >= fs_size + more / 100 * 93,
        "the file system on / is {grown_fs} bytes, {fs_size} before the disk grew by {more}"
    );
    let grew = check(
        &mut vm,
        "journalctl -b --no-pager -o cat -u systemd-repart.service -u keelson-growfs-root.service",
    );
    assert!(
        grew.contains("MiB after its last partition: systemd-repart grows root")
            && grew.contains("Finished keelson-growfs-root.service"),
        "{grew}"
    );
    assert_eq!(check(&mut vm, "cat /etc/keelson-state").trim(), token);
    eprintln!("root grew with the disk: partition {part} -> {grown}, ext4 {fs_size} -> {grown_fs}");
}

/// (e) Two builds from the same inputs give the same usr root hash. The second build runs
/// mmdebstrap again (`fresh_rootfs`), so the whole chain is rebuilt, with only the package
/// downloads cached.
#[test]
#[ignore = "needs the image build tools and the network to the Debian mirror: run by `cargo xtask test`"]
fn rebuild_gives_same_root_hash() {
    let rec = build_record();
    let os_dir = env_path("KEELSON_VM_OS");
    let out = tempfile::tempdir_in(env_path("KEELSON_VM_BUILD").parent().unwrap()).unwrap();
    let mut opts = keelson_image::BuildOptions::new(&os_dir, out.path());
    opts.version = Some(rec["version"].as_str().unwrap().to_string());
    opts.fresh_rootfs = true;
    opts.progress = false;
    // The first build trusts the development update key (xtask): so must the second.
    opts.update_keys = std::env::var_os("KEELSON_VM_UPDATE_KEY")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let second = keelson_image::build(&opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(!second.rootfs_cached);
    assert_eq!(second.usr_root_hash, rec["usr_root_hash"].as_str().unwrap());
    let sha = |kind: &str, v: &serde_json::Value| {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap()["sha256"]
            .clone()
    };
    let second_json = serde_json::to_value(&second).unwrap();
    assert_eq!(
        sha("usr", &second_json),
        sha("usr", &rec),
        "usr erofs images differ"
    );
    assert_eq!(
        sha("usr-verity", &second_json),
        sha("usr-verity", &rec),
        "verity trees differ"
    );
}

/// A build that fails late (the /usr image does not fit its partition, found only after the root
/// file system and the erofs image exist) names the field and leaves nothing under the output
/// names: no image, no parts, no work directory. Runs on the warm cache of the first build.
#[test]
#[ignore = "needs the image build tools and a warm build cache: run by `cargo xtask test`"]
fn late_failure_leaves_no_outputs() {
    let os_dir = env_path("KEELSON_VM_OS");
    let scratch = tempfile::tempdir_in(env_path("KEELSON_VM_BUILD").parent().unwrap()).unwrap();
    // Same os/ (so the cached root file system is used), but a usr partition of 64 MiB.
    let os_copy = scratch.path().join("os");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&os_dir)
        .arg(&os_copy)
        .status()
        .unwrap();
    assert!(st.success());
    let yaml = std::fs::read_to_string(os_copy.join("os.yaml")).unwrap();
    let small = yaml.replacen("usr_mib: 768", "usr_mib: 64", 1);
    assert_ne!(small, yaml, "os.yaml has no `usr_mib: 768`");
    std::fs::write(os_copy.join("os.yaml"), small).unwrap();
    let out = scratch.path().join("out");
    let mut opts = keelson_image::BuildOptions::new(&os_copy, &out);
    opts.progress = false;
    let err = keelson_image::build(&opts).unwrap_err().to_string();
    assert!(err.contains("layout.usr_mib"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A boot that cannot finish ends in a reboot by itself (the rollback work relies on it): with
/// the verity superblock of usr A destroyed, the initrd fails to set up /usr, Keelson's
/// emergency handler prints the reason and the machine reboots (the kernel starts again).
#[test]
#[ignore = "needs a built image and QEMU: run by `cargo xtask test`"]
fn failed_initrd_reboots_by_itself() {
    let rec = build_record();
    let image = PathBuf::from(rec["image"].as_str().unwrap());
    let verity = rec["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uuid"].as_str() == rec["usr_verity_partuuid"].as_str())
        .unwrap()
        .clone();
    let dir = tempfile::tempdir_in(image.parent().unwrap()).unwrap();
    let bad = dir.path().join("no-verity-superblock.img");
    let st = std::process::Command::new("cp")
        .args(["--sparse=always"])
        .arg(&image)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(st.success());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
        f.seek(SeekFrom::Start(verity["start"].as_u64().unwrap()))
            .unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
    }
    let mut o = VmOptions::new(&bad);
    o.snapshot = true;
    let mut vm = Vm::start(&o).unwrap_or_else(|e| panic!("{e}"));
    let failed = vm
        .wait_for("keelson-emergency: the boot failed", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let rebooting = vm
        .wait_for_from(
            "keelson-emergency: rebooting in",
            failed,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    vm.wait_for_from("Linux version", rebooting, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        vm.resets(),
        1,
        "the kernel did not start again after a guest reset"
    );
    let text = vm.console_text();
    assert!(
        !text.contains("Reached target multi-user.target"),
        "a broken /usr reached multi-user.target"
    );
}

/// A wait that times out reports where the vCPU is (QMP: run state, registers, the
/// instructions at the program counter, the local APIC, the virtio disk's queue, samples of
/// the program counter and the ACPI PM timer), so a guest that hangs silently, as after a
/// reset in the firmware, can be placed. The disk is blank: OVMF runs and finds nothing to
/// boot.
#[test]
#[ignore = "needs QEMU and OVMF: run by `cargo xtask test`"]
fn timed_out_wait_reports_the_vcpu() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut vm = Vm::start(&VmOptions::new(&blank)).unwrap_or_else(|e| panic!("{e}"));
    let err = vm
        .wait_for("a line no firmware prints", Duration::from_secs(15))
        .expect_err("the needle cannot appear")
        .to_string();
    for part in [
        "the vCPU then, through QMP",
        "(qemu) info status",
        "VM status: running",
        "(qemu) info registers",
        "RIP=",
        "(qemu) x/8i $pc",
        "(qemu) info lapic",
        "[virtio-blk]",
        "last_avail_idx:",
        "(qemu) xp /1hx 0x",
        "program counter and ACPI PM timer, 5 samples 0.2 s apart:\n  pc 0x",
        "pm timer portl[0x0608] = 0x",
    ] {
        assert!(err.contains(part), "{part:?} missing from:\n{err}");
    }
}
